package store

import (
	"time"

	bolt "go.etcd.io/bbolt"
)

// The bbolt engine: single-pointer wrappers, which an interface holds
// without allocating, so the default engine costs an indirect call per
// operation and nothing else.

type boltTx struct{ tx *bolt.Tx }

func (t boltTx) Bucket(name []byte) kvBucket {
	b := t.tx.Bucket(name)
	if b == nil {
		return nil
	}
	return boltBucket{b}
}

func (t boltTx) Writable() bool { return t.tx.Writable() }
func (t boltTx) Err() error     { return nil }

type boltBucket struct{ b *bolt.Bucket }

func (b boltBucket) Get(k []byte) []byte                        { return b.b.Get(k) }
func (b boltBucket) Exists(k []byte) bool                       { return b.b.Get(k) != nil }
func (b boltBucket) Put(k, v []byte) error                      { return b.b.Put(k, v) }
func (b boltBucket) PutExpiring(k, v []byte, _ time.Time) error { return b.b.Put(k, v) }
func (b boltBucket) Delete(k []byte) error                      { return b.b.Delete(k) }
func (b boltBucket) Cursor() kvCursor                           { return boltCursor{b.b.Cursor()} }
func (b boltBucket) AppendOnly()                                { b.b.FillPercent = 1.0 }
func (b boltBucket) Bucket(name []byte) kvBucket {
	s := b.b.Bucket(name)
	if s == nil {
		return nil
	}
	return boltBucket{s}
}

func (b boltBucket) CreateBucketIfNotExists(name []byte) (kvBucket, error) {
	s, err := b.b.CreateBucketIfNotExists(name)
	if err != nil {
		return nil, err
	}
	return boltBucket{s}, nil
}

type boltCursor struct{ c *bolt.Cursor }

func (c boltCursor) First() ([]byte, []byte)        { return c.c.First() }
func (c boltCursor) Last() ([]byte, []byte)         { return c.c.Last() }
func (c boltCursor) Next() ([]byte, []byte)         { return c.c.Next() }
func (c boltCursor) Prev() ([]byte, []byte)         { return c.c.Prev() }
func (c boltCursor) Seek(k []byte) ([]byte, []byte) { return c.c.Seek(k) }
