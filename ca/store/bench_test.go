package store_test

import (
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/store/storetest"
)

// splitmix64 spreads counter values over the key space like random serials.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// cpuTime returns the process's user+system CPU time in nanoseconds: the
// store's cost per write that the HTTPS and signing work must share 2
// cores with, independent of how fast the disk syncs.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkUpdateParallel measures issuance-shaped writes (PutCert +
// AppendAudit in one Update, durable on return) from many goroutines, as
// the HTTPS handlers will issue them. Run with
//
//	go test -run '^$' -bench UpdateParallel -cpu 2 ./ca/store/
func BenchmarkUpdateParallel(b *testing.B) {
	for _, bc := range []struct {
		name        string
		parallelism int // goroutines per GOMAXPROCS
		random      bool
	}{
		{"conc=1/serial=seq", 0, false},
		{"conc=64/serial=seq", 32, false},
		{"conc=64/serial=random", 32, true},
		{"conc=256/serial=seq", 128, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			db := storetest.MustOpen(b)
			var next atomic.Uint64
			now := time.Now()
			issue := func() error {
				n := next.Add(1)
				serial := n
				if bc.random {
					serial = splitmix64(n) | 1
				}
				user := "user" + strconv.FormatUint(n%1000, 10)
				return db.Update(b.Context(), func(tx *store.Tx) error {
					err := tx.PutCert(&store.CertRecord{Serial: serial, KeyID: user + "@sshward", Kind: store.CertKindUser,
						Tier: "staging", Identity: user, Principals: []string{"deploy", user},
						ValidAfter: now.Add(-time.Minute), ValidBefore: now.Add(time.Hour), IssuedAt: now,
						PublicKeyFP: "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU", RequestID: "", ClientAddr: "192.0.2.10:51234"})
					if err != nil {
						return err
					}
					return tx.AppendAudit(&store.AuditEvent{Time: now, Type: "cert.issue", Actor: user, Subject: user, Tier: "staging",
						Serial: serial, KeyID: user + "@sshward", ClientAddr: "192.0.2.10:51234",
						Details: map[string]string{"principals": "deploy," + user, "ttl": "1h0m0s"}})
				})
			}
			var (
				mu  sync.Mutex
				lat []time.Duration
			)
			timed := func(next func() bool) {
				var mine []time.Duration
				for next() {
					start := time.Now()
					if err := issue(); err != nil {
						b.Error(err)
						return
					}
					mine = append(mine, time.Since(start))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}
			b.ResetTimer()
			cpu0 := cpuTime()
			if bc.parallelism == 0 {
				timed(b.Loop)
			} else {
				b.SetParallelism(bc.parallelism)
				b.RunParallel(func(pb *testing.PB) { timed(pb.Next) })
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
			st := db.CommitStats()
			b.ReportMetric(float64(st.Updates)/float64(st.Commits), "updates/commit")
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e3, "cpu-µs/op")
			slices.Sort(lat)
			if len(lat) > 0 {
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1e3, "p99-ms")
			}
		})
	}
}

func BenchmarkVerifyAudit(b *testing.B) {
	db := storetest.MustOpen(b)
	const n = 10000
	mustUpdate(b, db, func(tx *store.Tx) error {
		for i := range n {
			if err := tx.AppendAudit(&store.AuditEvent{Type: "cert.issue", Actor: fmt.Sprint(i), Serial: uint64(i + 1)}); err != nil {
				return err
			}
		}
		return nil
	})
	for b.Loop() {
		if _, err := db.VerifyAudit(b.Context()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "records/s")
}
