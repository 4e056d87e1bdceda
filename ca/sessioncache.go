package ca

import (
	"sync"

	"github.com/sshward/sshward/ca/store"
)

// sessionCache keeps live CA sessions in memory so that issuing a
// certificate does not decode the session from the store every time. Every
// way a session ends inside this process (logout, user removal, revocation
// by user) drops it here too; the store file cannot change under a running
// CA because bbolt holds an exclusive lock, so the cache is never stale.
// Expiry is still checked on every use.
//
// Invalidation races with a concurrent lookup that read the store just
// before the revocation committed: gen orders them. A lookup remembers gen
// before reading the store and may only cache its result if no invalidation
// happened since; invalidations run after their commit and bump gen.
type sessionCache struct {
	mu  sync.RWMutex // guards m and gen
	m   map[string]store.Session
	gen uint64
}

// generation returns the current invalidation generation.
func (c *sessionCache) generation() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

// maxCachedSessions bounds memory; past it the cache starts over.
const maxCachedSessions = 100_000

func (c *sessionCache) get(id string) (store.Session, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	s, ok := c.m[id]
	return s, ok
}

func (c *sessionCache) put(s store.Session, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if c.m == nil || len(c.m) >= maxCachedSessions {
		c.m = make(map[string]store.Session)
	}
	c.m[s.ID] = s
}

func (c *sessionCache) drop(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.m, id)
}

func (c *sessionCache) dropUser(user string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for id, s := range c.m {
		if s.User == user {
			delete(c.m, id)
		}
	}
}
