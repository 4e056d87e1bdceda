package hostauth

import (
	"container/heap"
	"sync"
	"time"
)

// DefaultNonceCacheSize holds every nonce of ~1,000 requests/s over the
// 4-minute window a DefaultMaxSkew request stays acceptable.
const DefaultNonceCacheSize = 1 << 18

// NonceCache is a bounded in-memory replay cache for Verifier.Seen. Each nonce
// is kept until the time it was stored with, after which a request carrying
// it is stale anyway. The zero value is ready to use; set the fields before
// first use. It is safe for concurrent use.
type NonceCache struct {
	// Size is the most nonces held at once; zero means DefaultNonceCacheSize.
	Size int
	// Now is the clock that expires entries; nil means time.Now. Give it the
	// Verifier's clock: with a fake verifier clock in the past, a real-time
	// cache would find every nonce already expired and remember none.
	Now func() time.Time

	mu      sync.Mutex // guards the fields below
	entries map[string]time.Time
	byUntil expiryHeap // same nonces, soonest expiry first
}

// NewNonceCache returns a cache of size nonces (zero: the default) on the
// real clock.
func NewNonceCache(size int) *NonceCache {
	return &NonceCache{Size: size}
}

// Seen reports whether nonce is held, and otherwise holds it until until.
// When the cache is full of unexpired nonces it reports true: refusing a
// request is safe, forgetting a nonce that may still be replayed is not.
func (c *NonceCache) Seen(nonce string, until time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.nowLocked()
	c.expireLocked(now)
	if _, ok := c.entries[nonce]; ok {
		return true
	}
	if !until.After(now) {
		return false // already stale: nothing to remember
	}
	if len(c.entries) >= c.sizeLocked() {
		return true
	}
	if c.entries == nil {
		c.entries = make(map[string]time.Time)
	}
	c.entries[nonce] = until
	heap.Push(&c.byUntil, expiry{nonce: nonce, until: until})
	return false
}

// Len returns the number of nonces held.
func (c *NonceCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expireLocked(c.nowLocked())
	return len(c.entries)
}

func (c *NonceCache) nowLocked() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *NonceCache) sizeLocked() int {
	if c.Size > 0 {
		return c.Size
	}
	return DefaultNonceCacheSize
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
