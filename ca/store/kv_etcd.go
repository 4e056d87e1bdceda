package store

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// The etcd engine. Several CA replicas share one etcd cluster; every
// Update is an optimistic, serializable transaction (as etcd's own
// concurrency.STM, extended to key ranges):
//
//   - the first read fixes a revision; every later read of the
//     transaction is made at that revision, so it sees one snapshot;
//   - the transaction remembers the ModRevision of every key it read
//     (0 for an absent one) and every key range a cursor walked;
//   - it commits with one etcd Txn whose If compares each read key's
//     ModRevision with what was seen, and each range's ModRevisions with
//     the snapshot revision (nothing in it changed or appeared since), and
//     whose Then carries every Put and Delete;
//   - a deletion inside a walked range leaves no key to compare, so each
//     Delete also writes the bucket's delete mark, which a range read
//     records like a key: a scan conflicts with a concurrent delete;
//   - a failed comparison means another writer (this replica's or
//     another's) got there first: the whole batch runs again on fresh data.
//
// Hence anything decided from what a transaction read (a claim is free, a
// join token unused, the audit head is N) still holds when it commits, on
// whichever replica it ran: single use, one vote per approver, one chain.
//
// Keys: <prefix>/<bucket>[/<nested bucket>…]/=<key>; bucket names are
// escaped (%XX outside [A-Za-z0-9._@-]) so that no name can reach into
// another bucket's range. The delete mark is <prefix>/<bucket>/!.
//
// Expiring records (sessions, claims, join tokens, used ID tokens) are put
// with a lease shared by every record expiring in the same ten minutes
// plus an hour of grace (EtcdOptions.ExpiryGrace), so etcd forgets them by
// itself without a lease per write.

// EtcdOptions select the etcd engine (Options.Etcd).
type EtcdOptions struct {
	Endpoints []string
	// Prefix namespaces every key; default "sshward". Replicas of one CA
	// share it; two CAs on one cluster use two prefixes.
	Prefix string
	// TLS files (PEM): CA verifies the members; Cert and Key are this
	// client's certificate, for clusters that require one. Empty: plain
	// HTTP (loopback tests only).
	CA, Cert, Key string
	// DialTimeout bounds connecting; default 5 s.
	DialTimeout time.Duration
	// RequestTimeout bounds each etcd request; default 10 s.
	RequestTimeout time.Duration
	// ExpiryGrace is how long past its expiry a session, claim, join
	// token or used ID token stays in etcd (so that "expired" is still
	// told apart from "unknown"); default 1 h. Records expiring within the
	// same sixth of it (at most 10 min) share one lease.
	ExpiryGrace time.Duration
	// CertKeep is how long a certificate record (and its key id index
	// entry) stays in etcd after the certificate expires; default
	// DefaultCertKeep. Nothing needs it after that: the KRL lists only
	// unexpired serials, and the issuance stays in the audit log (and its
	// archive). What it serves meanwhile: `sshward-ca review` (certificates
	// issued in the review period), revocation by serial or key id (the
	// tier), single-use claims and host renewal (both of unexpired ones).
	// Serials never repeat after their records leave (Tx.MaxSerial). A
	// record stays at least min(CertKeep, MinCertKeep) after it is written.
	CertKeep time.Duration
	// MaxTxnOps is the cluster's --max-txn-ops (default 128): a batch
	// whose transaction would need more operations is split.
	MaxTxnOps int
}

// DefaultCertKeep is EtcdOptions.CertKeep's default: an access review of
// the last month still sees every certificate of it.
const DefaultCertKeep = 30 * 24 * time.Hour

const (
	defaultEtcdPrefix   = "sshward"
	defaultEtcdMaxBatch = 32
	etcdPage            = 256 // keys per range request of a cursor
	defaultExpiryGrace  = time.Hour
	maxLeaseStep        = 10 * time.Minute
)

// Engine errors that re-run a transaction rather than fail it.
var (
	errConflict = errors.New("store: etcd: transaction conflict")
	errTooLarge = errors.New("store: etcd: transaction exceeds the cluster's operation limit")
)

type etcdEngine struct {
	cli     *clientv3.Client
	prefix  string
	now     func() time.Time
	timeout time.Duration
	maxOps  int
	grace   time.Duration // ExpiryGrace
	step    time.Duration // lease bucket width

	conflicts atomic.Uint64 // attempts re-run after a failed comparison

	// Every commit also writes a nonce under this DB's own key, so that a
	// commit whose answer was lost (the leader died after proposing it)
	// can be resolved by reading the key back: applied or not, never
	// "maybe" (resolve).
	commitKey string

	bg   context.Context // ends at close: watches
	stop context.CancelFunc

	leaseMu sync.Mutex
	leases  map[int64]clientv3.LeaseID // bucket end (Unix s, real clock) → lease
}

func openEtcd(ctx context.Context, o *EtcdOptions, now func() time.Time) (*etcdEngine, error) {
	if len(o.Endpoints) == 0 {
		return nil, fmt.Errorf("store: etcd: no endpoints: %w", ErrInvalid)
	}
	prefix := o.Prefix
	if prefix == "" {
		prefix = defaultEtcdPrefix
	}
	prefix = strings.TrimSuffix(prefix, "/")
	cfg := clientv3.Config{
		Endpoints:   o.Endpoints,
		DialTimeout: o.DialTimeout,
		Context:     context.WithoutCancel(ctx),
		Logger:      zap.NewNop(),
		// Fail fast when the cluster is gone instead of queueing forever.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if o.CA != "" || o.Cert != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if o.CA != "" {
			pem, err := os.ReadFile(o.CA)
			if err != nil {
				return nil, fmt.Errorf("store: etcd: tls ca: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("store: etcd: tls ca %s holds no PEM certificate: %w", o.CA, ErrInvalid)
			}
		}
		if o.Cert != "" || o.Key != "" {
			c, err := tls.LoadX509KeyPair(o.Cert, o.Key)
			if err != nil {
				return nil, fmt.Errorf("store: etcd: tls client certificate: %w", err)
			}
			tc.Certificates = []tls.Certificate{c}
		}
		cfg.TLS = tc
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("store: etcd %s: %w", strings.Join(o.Endpoints, ","), err)
	}
	e := &etcdEngine{cli: cli, prefix: prefix, now: now, timeout: o.RequestTimeout, maxOps: o.MaxTxnOps,
		leases: map[int64]clientv3.LeaseID{}}
	if e.timeout == 0 {
		e.timeout = 10 * time.Second
	}
	e.bg, e.stop = context.WithCancel(context.WithoutCancel(ctx))
	var id [12]byte
	crand.Read(id[:])
	e.commitKey = (&etcdBucket{base: prefix + "/" + escapeName(bucketInternal)}).key([]byte("commit/" + hex.EncodeToString(id[:])))
	if e.maxOps == 0 {
		e.maxOps = 128
	}
	e.grace = o.ExpiryGrace
	if e.grace <= 0 {
		e.grace = defaultExpiryGrace
	}
	e.step = min(max(e.grace/6, time.Second), maxLeaseStep).Truncate(time.Second)
	return e, nil
}

func (e *etcdEngine) close() error {
	e.stop()
	return e.cli.Close()
}

// watchKey calls fn after every change of the key name in bucket, and
// whenever the watch had to start over (it may have missed one), until
// the engine closes.
func (e *etcdEngine) watchKey(bucket []byte, name []byte, fn func()) {
	key := (&etcdBucket{base: e.prefix + "/" + escapeName(bucket)}).key(name)
	go func() {
		for e.bg.Err() == nil {
			wch := e.cli.Watch(clientv3.WithRequireLeader(e.bg), key)
			for resp := range wch {
				if resp.Err() != nil {
					break
				}
				fn()
			}
			fn()
			select {
			case <-e.bg.Done():
			case <-time.After(time.Second):
			}
		}
	}()
}

func (e *etcdEngine) describe() string {
	return "etcd " + strings.Join(e.cli.Endpoints(), ",") + " prefix " + e.prefix
}

// escapeName keeps a bucket name to [A-Za-z0-9._@-] and %XX.
func escapeName(name []byte) string {
	var sb strings.Builder
	for _, c := range name {
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '@' || c == '-' {
			sb.WriteByte(c)
		} else {
			fmt.Fprintf(&sb, "%%%02X", c)
		}
	}
	return sb.String()
}

// etcdTx is one transaction; not safe for concurrent use (neither is a
// bbolt transaction).
type etcdTx struct {
	e     *etcdEngine
	ctx   context.Context
	write bool
	rev   int64 // the snapshot; 0 until the first read
	err   error // the first failed read: poisons the transaction
	retry bool  // a re-run after a conflict: Exists reads instead of guessing

	reads  map[string]int64  // key → ModRevision seen (writable only)
	ranges [][2]string       // [from, to) walked at rev (writable only)
	cache  map[string][]byte // key → value at rev (nil: absent)
	writes map[string]*etcdWrite
}

type etcdWrite struct {
	val    []byte
	del    bool
	expire time.Time // zero: no lease
}

func (e *etcdEngine) newTx(ctx context.Context, write bool) *etcdTx {
	t := &etcdTx{e: e, ctx: ctx, write: write, cache: map[string][]byte{}}
	if write {
		t.reads, t.writes = map[string]int64{}, map[string]*etcdWrite{}
	}
	return t
}

func (t *etcdTx) Writable() bool { return t.write }
func (t *etcdTx) Err() error     { return t.err }

func (t *etcdTx) Bucket(name []byte) kvBucket {
	return &etcdBucket{t: t, base: t.e.prefix + "/" + escapeName(name)}
}

// fail poisons the transaction with its first failed read.
func (t *etcdTx) fail(err error) {
	if t.err == nil {
		t.err = err
	}
}

// get performs a range request at the snapshot (fixing it on the first
// read). A serializable read at a fixed revision is answered by the
// member the client talks to; one that has not applied the revision yet
// is asked again through the leader.
func (t *etcdTx) get(key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if t.err != nil {
		return nil, t.err
	}
	ctx, cancel := context.WithTimeout(t.ctx, t.e.timeout)
	defer cancel()
	if t.rev == 0 {
		r, err := t.e.cli.Get(ctx, key, opts...)
		if err != nil {
			t.fail(fmt.Errorf("store: etcd: read: %w", err))
			return nil, t.err
		}
		t.rev = r.Header.Revision
		return r, nil
	}
	r, err := t.e.cli.Get(ctx, key, append(opts, clientv3.WithRev(t.rev), clientv3.WithSerializable())...)
	if errors.Is(err, rpctypes.ErrFutureRev) {
		r, err = t.e.cli.Get(ctx, key, append(opts, clientv3.WithRev(t.rev))...)
	}
	if err != nil {
		t.fail(fmt.Errorf("store: etcd: read: %w", err))
		return nil, t.err
	}
	return r, nil
}

// prefetch reads keys in one request (as etcd's STM does on a retry): a
// re-run after a conflict then costs one round trip for what the last
// attempt read one key at a time. It fixes the snapshot revision.
func (t *etcdTx) prefetch(keys []string) {
	if len(keys) == 0 || t.rev != 0 {
		return
	}
	keys = keys[:min(len(keys), t.e.maxOps)]
	ops := make([]clientv3.Op, len(keys))
	for i, k := range keys {
		ops[i] = clientv3.OpGet(k)
	}
	ctx, cancel := context.WithTimeout(t.ctx, t.e.timeout)
	defer cancel()
	r, err := t.e.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return // read one by one instead
	}
	t.rev = r.Header.Revision
	for i, k := range keys {
		var v []byte
		var mod int64
		if rr := r.Responses[i].GetResponseRange(); rr != nil && len(rr.Kvs) == 1 {
			v, mod = kvValue(rr.Kvs[0]), rr.Kvs[0].ModRevision
		}
		t.cache[k] = v
		if t.write {
			t.reads[k] = mod
		}
	}
}

// getKey returns the value of one full key as of the snapshot, after the
// transaction's own writes.
func (t *etcdTx) getKey(key string) []byte {
	if t.write {
		if w, ok := t.writes[key]; ok {
			if w.del {
				return nil
			}
			return w.val
		}
	}
	if v, ok := t.cache[key]; ok {
		return v
	}
	r, err := t.get(key)
	if err != nil {
		return nil
	}
	var v []byte
	var mod int64
	if len(r.Kvs) == 1 {
		v, mod = r.Kvs[0].Value, r.Kvs[0].ModRevision
		if v == nil {
			v = []byte{}
		}
	}
	t.cache[key] = v
	if t.write {
		t.reads[key] = mod
	}
	return v
}

// readRange fetches up to limit keys of [from, to) at the snapshot
// (descending when desc), records what was observed, and returns them.
func (t *etcdTx) readRange(from, to string, limit int64, desc bool) []*mvccpb.KeyValue {
	opts := []clientv3.OpOption{clientv3.WithRange(to), clientv3.WithLimit(limit)}
	if desc {
		opts = append(opts, clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend))
	}
	r, err := t.get(from, opts...)
	if err != nil {
		return nil
	}
	if t.write {
		// The part of the range the answer speaks for.
		lo, hi := from, to
		if r.More && len(r.Kvs) > 0 {
			last := string(r.Kvs[len(r.Kvs)-1].Key)
			if desc {
				lo = last
			} else {
				hi = last + "\x00"
			}
		}
		t.ranges = append(t.ranges, [2]string{lo, hi})
	}
	return r.Kvs
}

type etcdBucket struct {
	t    *etcdTx
	base string
}

func (b *etcdBucket) key(k []byte) string { return b.base + "/=" + string(k) }
func (b *etcdBucket) lo() string          { return b.base + "/=" }
func (b *etcdBucket) hi() string          { return b.base + "/>" } // '>' follows '='
func (b *etcdBucket) mark() string        { return b.base + "/!" }

func (b *etcdBucket) Get(k []byte) []byte { return b.t.getKey(b.key(k)) }

func (b *etcdBucket) Exists(k []byte) bool {
	t, key := b.t, b.key(k)
	if !t.write || t.err != nil || t.retry {
		return b.Get(k) != nil // a re-run reads: a wrong guess costs one attempt
	}
	if w, ok := t.writes[key]; ok {
		return !w.del
	}
	if v, ok := t.cache[key]; ok {
		return v != nil
	}
	t.cache[key] = nil // assumed absent; the commit compares ModRevision with 0
	t.reads[key] = 0
	return false
}

func (b *etcdBucket) put(k, v []byte, at time.Time) error {
	if !b.t.write {
		return fmt.Errorf("store: etcd: put in a read-only transaction: %w", ErrReadOnly)
	}
	if len(k) == 0 {
		return fmt.Errorf("store: etcd: empty key: %w", ErrInvalid)
	}
	val := []byte{} // bbolt stores nil as empty; so does this engine
	if len(v) > 0 {
		val = bytes.Clone(v)
	}
	b.t.writes[b.key(k)] = &etcdWrite{val: val, expire: at}
	return nil
}

func (b *etcdBucket) Put(k, v []byte) error                       { return b.put(k, v, time.Time{}) }
func (b *etcdBucket) PutExpiring(k, v []byte, at time.Time) error { return b.put(k, v, at) }

func (b *etcdBucket) Delete(k []byte) error {
	if !b.t.write {
		return fmt.Errorf("store: etcd: delete in a read-only transaction: %w", ErrReadOnly)
	}
	b.t.writes[b.key(k)] = &etcdWrite{del: true}
	b.t.writes[b.mark()] = &etcdWrite{val: []byte{}}
	return nil
}

func (b *etcdBucket) Bucket(name []byte) kvBucket {
	return &etcdBucket{t: b.t, base: b.base + "/" + escapeName(name)}
}

func (b *etcdBucket) CreateBucketIfNotExists(name []byte) (kvBucket, error) {
	return b.Bucket(name), nil
}

func (b *etcdBucket) AppendOnly() {}

func (b *etcdBucket) Cursor() kvCursor {
	c := &etcdCursor{b: b, lo: b.lo(), hi: b.hi()}
	if b.t.write {
		b.t.getKey(b.mark()) // a concurrent delete in this bucket conflicts with the walk
		for k := range b.t.writes {
			if k >= c.lo && k < c.hi {
				c.local = append(c.local, k)
			}
		}
		slices.Sort(c.local)
	}
	return c
}

// etcdCursor merges the bucket at the snapshot (read in pages) with the
// transaction's own writes as they were when the cursor was made.
type etcdCursor struct {
	b      *etcdBucket
	lo, hi string
	local  []string // keys this transaction wrote in the bucket, sorted
	cur    string
	ok     bool

	page    []*mvccpb.KeyValue // ascending
	pageLo  string             // page holds every remote key in [pageLo, last page key]
	pageEnd bool               // … and there is none after it
}

func kvValue(kv *mvccpb.KeyValue) []byte {
	if kv.Value == nil {
		return []byte{}
	}
	return kv.Value
}

// remoteFrom returns the first key at the snapshot that is >= from.
func (c *etcdCursor) remoteFrom(from string) (string, []byte, bool) {
	for {
		if c.page != nil && from >= c.pageLo {
			i := sort.Search(len(c.page), func(i int) bool { return string(c.page[i].Key) >= from })
			if i < len(c.page) {
				return string(c.page[i].Key), kvValue(c.page[i]), true
			}
			if c.pageEnd {
				return "", nil, false
			}
		}
		kvs := c.b.t.readRange(from, c.hi, etcdPage, false)
		if c.b.t.err != nil {
			return "", nil, false
		}
		c.page, c.pageLo, c.pageEnd = kvs, from, len(kvs) < etcdPage
		if len(kvs) == 0 {
			return "", nil, false
		}
	}
}

// deleted reports whether this transaction deleted k.
func (c *etcdCursor) deleted(k string) bool {
	w, ok := c.b.t.writes[k]
	return ok && w.del
}

// firstFrom returns the first live key >= from (remote or local).
func (c *etcdCursor) firstFrom(from string) (string, []byte, bool) {
	var (
		rk  string
		rv  []byte
		rok bool
	)
	for f := from; ; {
		rk, rv, rok = c.remoteFrom(f)
		if rok && c.deleted(rk) {
			f = rk + "\x00"
			continue
		}
		break
	}
	i := sort.SearchStrings(c.local, from)
	for i < len(c.local) && c.deleted(c.local[i]) {
		i++
	}
	if i < len(c.local) && (!rok || c.local[i] <= rk) {
		return c.local[i], c.b.t.writes[c.local[i]].val, true
	}
	return rk, rv, rok
}

// lastBefore returns the last live key < before (remote or local).
func (c *etcdCursor) lastBefore(before string) (string, []byte, bool) {
	var (
		rk  string
		rv  []byte
		rok bool
	)
	for b := before; ; {
		kvs := c.b.t.readRange(c.lo, b, 1, true)
		if len(kvs) == 0 {
			break
		}
		rk, rv, rok = string(kvs[0].Key), kvValue(kvs[0]), true
		if c.deleted(rk) {
			b, rok = rk, false
			continue
		}
		break
	}
	i := sort.SearchStrings(c.local, before) - 1
	for i >= 0 && c.deleted(c.local[i]) {
		i--
	}
	if i >= 0 && (!rok || c.local[i] >= rk) {
		return c.local[i], c.b.t.writes[c.local[i]].val, true
	}
	return rk, rv, rok
}

func (c *etcdCursor) at(k string, v []byte, ok bool) ([]byte, []byte) {
	c.cur, c.ok = k, ok
	if !ok || c.b.t.err != nil {
		c.ok = false
		return nil, nil
	}
	return []byte(k[len(c.lo):]), v
}

func (c *etcdCursor) First() ([]byte, []byte) { return c.at(c.firstFrom(c.lo)) }
func (c *etcdCursor) Last() ([]byte, []byte)  { return c.at(c.lastBefore(c.hi)) }
func (c *etcdCursor) Seek(k []byte) ([]byte, []byte) {
	return c.at(c.firstFrom(c.lo + string(k)))
}

func (c *etcdCursor) Next() ([]byte, []byte) {
	if !c.ok {
		return nil, nil
	}
	return c.at(c.firstFrom(c.cur + "\x00"))
}

func (c *etcdCursor) Prev() ([]byte, []byte) {
	if !c.ok {
		return nil, nil
	}
	return c.at(c.lastBefore(c.cur))
}

// lease returns a lease that outlives at+grace, shared with every record
// expiring in the same step. at is on the store's clock; the
// lease runs on etcd's, so only the distance from now counts.
func (e *etcdEngine) lease(ctx context.Context, at time.Time) (clientv3.LeaseID, error) {
	ttl := at.Sub(e.now()) + e.grace
	if ttl < e.grace {
		ttl = e.grace
	}
	real := time.Now()
	end := real.Add(ttl).Truncate(e.step).Add(e.step).Unix()
	e.leaseMu.Lock()
	defer e.leaseMu.Unlock()
	for k := range e.leases { // ended buckets: their leases are gone
		if k <= real.Unix() {
			delete(e.leases, k)
		}
	}
	if id, ok := e.leases[end]; ok {
		return id, nil
	}
	cctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	r, err := e.cli.Grant(cctx, end-real.Unix()+1)
	if err != nil {
		return 0, fmt.Errorf("store: etcd: lease: %w", err)
	}
	e.leases[end] = r.ID
	return r.ID, nil
}

func (e *etcdEngine) forgetLeases() {
	e.leaseMu.Lock()
	clear(e.leases)
	e.leaseMu.Unlock()
}

// commit sends the transaction: errConflict when something it read
// changed, errTooLarge when it needs more operations than the cluster
// allows in one Txn.
func (t *etcdTx) commit() error {
	if len(t.writes) == 0 {
		return nil // read only: the snapshot was consistent
	}
	cmps := make([]clientv3.Cmp, 0, len(t.reads)+len(t.ranges))
	for k, mod := range t.reads {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", mod))
	}
	for _, r := range t.ranges {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(r[0]).WithRange(r[1]), "<", t.rev+1))
	}
	if len(cmps) > t.e.maxOps || len(t.writes)+1 > t.e.maxOps { // +1: the commit key
		return errTooLarge
	}
	ops := make([]clientv3.Op, 0, len(t.writes))
	leases := map[time.Time]clientv3.LeaseID{} // one lease per expiry in a commit (a record and its index entry)
	for k, w := range t.writes {
		switch {
		case w.del:
			ops = append(ops, clientv3.OpDelete(k))
		case !w.expire.IsZero():
			id, ok := leases[w.expire]
			if !ok {
				var err error
				if id, err = t.e.lease(t.ctx, w.expire); err != nil {
					return err
				}
				leases[w.expire] = id
			}
			ops = append(ops, clientv3.OpPut(k, string(w.val), clientv3.WithLease(id)))
		default:
			ops = append(ops, clientv3.OpPut(k, string(w.val)))
		}
	}
	var nonce [16]byte
	crand.Read(nonce[:])
	id, err := t.e.lease(t.ctx, t.e.now())
	if err != nil {
		return err
	}
	ops = append(ops, clientv3.OpPut(t.e.commitKey, string(nonce[:]), clientv3.WithLease(id)))
	ctx, cancel := context.WithTimeout(t.ctx, t.e.timeout)
	defer cancel()
	r, err := t.e.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	switch {
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		t.e.forgetLeases()
		return errConflict
	case errors.Is(err, rpctypes.ErrTooManyOps), errors.Is(err, rpctypes.ErrRequestTooLarge):
		return errTooLarge
	case errors.Is(err, rpctypes.ErrDuplicateKey):
		return fmt.Errorf("store: etcd: commit: %w", err)
	case err != nil:
		return t.e.resolve(t.ctx, string(nonce[:]), err)
	case !r.Succeeded:
		return errConflict
	}
	return nil
}

// resolve decides a commit whose answer was lost: once a linearizable
// read answers (a leader of a later term has committed its own entry, so
// the lost proposal is either applied or gone for good), the commit key
// holds this commit's nonce exactly when it was applied. Not applied: the
// caller re-runs the transaction (errConflict), which is safe.
func (e *etcdEngine) resolve(ctx context.Context, nonce string, cause error) error {
	for attempt := 0; ; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, e.timeout)
		r, err := e.cli.Get(rctx, e.commitKey)
		cancel()
		if err == nil {
			if len(r.Kvs) == 1 && string(r.Kvs[0].Value) == nonce {
				return nil
			}
			return errConflict
		}
		if ctx.Err() != nil {
			return fmt.Errorf("store: etcd: commit: outcome unknown (the cluster did not answer again): %w", cause)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(min(attempt+1, 10)) * 100 * time.Millisecond):
		}
	}
}

// retriable reports whether a poisoned read is worth a fresh attempt.
func retriable(err error) bool {
	return errors.Is(err, rpctypes.ErrCompacted) || errors.Is(err, rpctypes.ErrFutureRev)
}

// update runs run in write transactions until one commits, fails with
// run's error (returned as is), or the cluster fails.
func (e *etcdEngine) update(ctx context.Context, run func(kvTx) error) error {
	var again []string // keys the last attempt read: fetched in one request next time
	for attempt := 0; ; attempt++ {
		t := e.newTx(ctx, true)
		t.retry = attempt > 0
		t.prefetch(again)
		err := run(t)
		switch {
		case t.err != nil && retriable(t.err):
			err = errConflict
		case t.err != nil:
			return t.err
		case err != nil:
			return err
		default:
			err = t.commit()
		}
		if !errors.Is(err, errConflict) {
			return err
		}
		e.conflicts.Add(1)
		again = again[:0]
		for k := range t.reads {
			again = append(again, k)
		}
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("store: etcd: gave up after %d conflicting attempts: %w", attempt+1, cerr)
		}
		// Replicas that collided should not collide again in lockstep.
		time.Sleep(time.Duration(rand.Int64N(int64(time.Millisecond) << min(attempt, 5))))
	}
}

// view runs fn on one snapshot.
func (e *etcdEngine) view(ctx context.Context, fn func(kvTx) error) error {
	for attempt := 0; ; attempt++ {
		t := e.newTx(ctx, false)
		err := fn(t)
		if t.err != nil {
			if retriable(t.err) && attempt < 3 {
				continue
			}
			return t.err
		}
		return err
	}
}
