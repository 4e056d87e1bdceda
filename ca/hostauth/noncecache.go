package hostauth

import (
	"container/heap"
	"sync"
	"time"
)

// DefaultNonceCacheSize holds every nonce of ~1,000 requests/s over the
// 4-minute window a DefaultMaxSkew request stays acceptable.
const DefaultNonceCacheSize = 1 << 18

// NonceCacheConfig configures a NonceCache.
type NonceCacheConfig struct {
	// Size is the most nonces held at once; zero means DefaultNonceCacheSize.
	Size int
	// Now is the clock that expires entries; nil means time.Now.
	Now func() time.Time
}

// NonceCache is a bounded in-memory replay cache for Verifier.Seen. Each nonce
// is kept until the time it was stored with, after which a request carrying
// it is stale anyway. It is safe for concurrent use.
type NonceCache struct {
	size int
	now  func() time.Time

	mu      sync.Mutex // guards the fields below
	entries map[string]time.Time
	byUntil expiryHeap // same nonces, soonest expiry first
}

// NewNonceCache returns an empty cache.
func NewNonceCache(cfg NonceCacheConfig) *NonceCache {
	if cfg.Size <= 0 {
		cfg.Size = DefaultNonceCacheSize
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &NonceCache{size: cfg.Size, now: cfg.Now, entries: make(map[string]time.Time)}
}

// Seen reports whether nonce is held, and otherwise holds it until until.
// When the cache is full of unexpired nonces it reports true: refusing a
// request is safe, forgetting a nonce that may still be replayed is not.
func (c *NonceCache) Seen(nonce string, until time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	c.expireLocked(now)
	if _, ok := c.entries[nonce]; ok {
		return true
	}
	if !until.After(now) {
		return false // already stale: nothing to remember
	}
	if len(c.entries) >= c.size {
		return true
	}
	c.entries[nonce] = until
	heap.Push(&c.byUntil, expiry{nonce: nonce, until: until})
	return false
}

// Len returns the number of nonces held.
func (c *NonceCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expireLocked(c.now())
	return len(c.entries)
}

func (c *NonceCache) expireLocked(now time.Time) {
	for len(c.byUntil) > 0 && !c.byUntil[0].until.After(now) {
		e := heap.Pop(&c.byUntil).(expiry)
		delete(c.entries, e.nonce)
	}
}

type expiry struct {
	nonce string
	until time.Time
}

// expiryHeap is a container/heap min-heap by until.
type expiryHeap []expiry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].until.Before(h[j].until) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
