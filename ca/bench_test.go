package ca_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
)

// BenchmarkIssueHTTPS measures certificate issuance end to end: HTTPS with
// keep-alive connections, session lookup, policy, signing, and the durable
// group-committed store write (cert record + audit record) before the reply.
func BenchmarkIssueHTTPS(b *testing.B) {
	for _, conc := range []int{1, 8, 32, 64} {
		b.Run(fmt.Sprintf("c=%d", conc), func(b *testing.B) {
			w := catest.New(b, catest.Options{})
			w.AddUser(b, "alice", pw, []string{"engineers"}, false)
			c := w.Client(b, w.Login(b, "alice", pw, ""))
			pub, _, _ := ed25519.GenerateKey(rand.Reader)
			sp, _ := ssh.NewPublicKey(pub)
			req := api.CertRequest{Tier: "staging", PublicKey: string(ssh.MarshalAuthorizedKey(sp))}
			ctx := context.Background()
			// warm the connections
			var wg sync.WaitGroup
			for range conc {
				wg.Go(func() { c.Cert(ctx, req) })
			}
			wg.Wait()
			lat := make([]time.Duration, b.N)
			var next atomic.Int64
			var failed atomic.Int64
			b.ResetTimer()
			start := time.Now()
			for range conc {
				wg.Go(func() {
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							return
						}
						t0 := time.Now()
						if _, err := c.Cert(ctx, req); err != nil {
							failed.Add(1)
						}
						lat[i] = time.Since(t0)
					}
				})
			}
			wg.Wait()
			el := time.Since(start)
			b.StopTimer()
			if f := failed.Load(); f > 0 {
				b.Fatalf("%d issuances failed", f)
			}
			slices.Sort(lat)
			b.ReportMetric(float64(b.N)/el.Seconds(), "certs/s")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			if st := w.Store.CommitStats(); st.Commits > 0 {
				b.ReportMetric(float64(st.Updates)/float64(st.Commits), "writes/commit")
			}
		})
	}
}

// BenchmarkSignCertRaw is x/crypto's SignCert with an in-memory ed25519 CA,
// the ceiling for issuance.
func BenchmarkSignCertRaw(b *testing.B) {
	signer := catest.NewSigner(b)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	sp, _ := ssh.NewPublicKey(pub)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c := &ssh.Certificate{Key: sp, Serial: 1, CertType: ssh.UserCert, KeyId: "alice@local tier=staging req=- serial=1",
				ValidPrincipals: []string{"alice", "deploy"}, ValidAfter: 1, ValidBefore: 2,
				Permissions: ssh.Permissions{Extensions: map[string]string{"permit-pty": ""}}}
			if err := c.SignCert(rand.Reader, signer); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
}

// BenchmarkSSHKeygenSign is the OpenSSH peer: one `ssh-keygen -s` per
// certificate (what a shell-script CA does), two at a time on 2 cores.
func BenchmarkSSHKeygenSign(b *testing.B) {
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		b.Fatal("ssh-keygen not installed: apt-get install openssh-client")
	}
	dir := b.TempDir()
	ca := filepath.Join(dir, "ca")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", ca).CombinedOutput(); err != nil {
		b.Fatalf("%v %s", err, out)
	}
	var next atomic.Int64
	b.ResetTimer()
	b.SetParallelism(1)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			key := filepath.Join(dir, fmt.Sprintf("k%d", i))
			pub, _, _ := ed25519.GenerateKey(rand.Reader)
			sp, _ := ssh.NewPublicKey(pub)
			os.WriteFile(key+".pub", ssh.MarshalAuthorizedKey(sp), 0o644)
			out, err := exec.Command("ssh-keygen", "-q", "-s", ca, "-I", "alice", "-n", "alice,deploy", "-V", "+60m", "-z", fmt.Sprint(i), key+".pub").CombinedOutput()
			if err != nil {
				b.Fatalf("ssh-keygen -s: %v %s", err, out)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
}
