package main_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/client"
	"github.com/sshward/sshward/ca/store/etcdtest"
)

// TestReplicasOnEtcd runs three real sshward-ca serve processes on one
// real 3-member etcd cluster and races them: everything that must happen
// once happens once across replicas, state made through one is used
// through another at once, the audit chain stays one verifying chain, and
// the CA keeps issuing when the etcd leader dies.
func TestReplicasOnEtcd(t *testing.T) {
	ec := etcdtest.Start(t, 3)
	ctx := t.Context()
	work := t.TempDir()
	r := &runner{t: t, env: []string{"SSHWARD_CA_PASSPHRASE=e2e-passphrase-123", "SSHWARD_HOME=" + filepath.Join(work, "home"), "SSH_AUTH_SOCK="}}
	dir0 := filepath.Join(work, "ca0")
	initRes := initOnEtcd(t, r, dir0, ec.Endpoints(), "e2e")

	// Users, offline, straight into etcd.
	secrets := map[string]string{}
	for _, u := range []struct{ name, groups string }{{"alice", "oncall,engineers"}, {"ic1", "incident-commanders"}, {"ic2", "incident-commanders"}} {
		var res struct {
			TOTPSecret string `json:"totp_secret"`
		}
		if err := json.Unmarshal([]byte(r.ok(u.name+"-password-1\n", "sshward-ca", "users", "add", u.name, "--dir", dir0, "--groups", u.groups, "--totp", "--password-stdin", "--json")), &res); err != nil {
			t.Fatal(err)
		}
		secrets[u.name] = res.TOTPSecret
	}
	r.ok("bob-password-1\n", "sshward-ca", "users", "add", "bob", "--dir", dir0, "--groups", "engineers", "--password-stdin")

	// Two more replicas: copies of the CA directory (keys, TLS root, config).
	dirs := []string{dir0, filepath.Join(work, "ca1"), filepath.Join(work, "ca2")}
	for _, d := range dirs[1:] {
		if out, err := exec.Command("cp", "-a", dir0, d).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, out)
		}
	}
	var cas []*client.Client
	var urls []string
	for _, d := range dirs {
		addr := freeAddr(t)
		urls = append(urls, "https://"+addr)
		startCA(t, r, d, addr)
		c, err := client.New(client.Config{URL: "https://" + addr, Fingerprint: initRes.Fingerprint, Timeout: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		cas = append(cas, c)
	}
	// Generous: six argon2id logins at once on a loaded 2-core machine
	// (-race) can take longer than 30 s, and a login that times out on the
	// client but opened its session would look like none was opened.
	fresh := func(i int) *client.Client {
		c, err := client.New(client.Config{URL: urls[i], Fingerprint: initRes.Fingerprint, Timeout: 3 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	// TOTP replay: alice's one code sent to all three replicas at once
	// opens exactly one session.
	code, err := totp.GenerateCode(secrets["alice"], time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var logins []*api.LoginResponse
	var refusals []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range cas {
		for range 2 {
			wg.Go(func() {
				res, err := fresh(i).Login(ctx, api.LoginRequest{User: "alice", Password: "alice-password-1", OTP: code})
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					refusals = append(refusals, fmt.Sprintf("replica %d: %v", i, err))
					return
				}
				logins = append(logins, res)
			})
		}
	}
	wg.Wait()
	if len(logins) != 1 {
		t.Fatalf("one TOTP code through 3 replicas opened %d sessions, want 1; refusals:\n%s", len(logins), strings.Join(refusals, "\n"))
	}
	alice := logins[0].Token
	as := make([]*client.Client, 3)
	for i := range as {
		as[i] = fresh(i)
		as[i].SetToken(alice)
	}

	// A session made on one replica works on every other at once, and
	// certificates issued concurrently through all three are all recorded
	// with distinct serials.
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	sshPub, _ := ssh.NewPublicKey(pub)
	pubLine := string(ssh.MarshalAuthorizedKey(sshPub))
	var serials []uint64
	for i := range as {
		for range 6 {
			wg.Go(func() {
				for range 4 {
					res, err := as[i].Cert(ctx, api.CertRequest{Tier: "staging", PublicKey: pubLine})
					if err != nil {
						t.Errorf("cert through replica %d: %v", i, err)
						return
					}
					mu.Lock()
					serials = append(serials, res.Serial)
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	slices.Sort(serials)
	if len(serials) != 72 || len(slices.Compact(slices.Clone(serials))) != 72 {
		t.Fatalf("%d certificates, %d distinct serials; want 72 distinct", len(serials), len(slices.Compact(slices.Clone(serials))))
	}

	// A revocation made through one replica is in the KRL of another.
	victim := serials[len(serials)/2]
	r.ok("", "sshward-ca", "revoke", "--dir", dirs[1], "--serial", fmt.Sprint(victim))
	krlBytes, err := cas[2].KRL(ctx, "staging")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(krlBytes), string(binary.BigEndian.AppendUint64(nil, victim))) {
		t.Fatalf("serial %d revoked through replica 1 is not in replica 2's KRL", victim)
	}

	// Approvals: ic1 votes through two replicas at once, ic2 through the
	// third: two distinct approvers, each counted once.
	req, err := as[0].CreateRequest(ctx, api.CreateRequest{Tier: "break-glass", Reason: "incident 42"})
	if err != nil {
		t.Fatal(err)
	}
	icTok := map[string]string{}
	for i, name := range []string{"ic1", "ic2"} {
		code, _ := totp.GenerateCode(secrets[name], time.Now())
		res, err := fresh(i).Login(ctx, api.LoginRequest{User: name, Password: name + "-password-1", OTP: code})
		if err != nil {
			t.Fatalf("login %s: %v", name, err)
		}
		icTok[name] = res.Token
	}
	for i, name := range []string{"ic1", "ic1", "ic2"} {
		wg.Go(func() {
			c := fresh(i)
			c.SetToken(icTok[name])
			c.ApproveRequest(ctx, req.ID, "ok") // the double vote may be refused
		})
	}
	wg.Wait()
	got, err := as[2].GetRequest(ctx, req.ID)
	if err != nil {
		t.Fatal(err)
	}
	var by []string
	for _, v := range got.Approvals {
		by = append(by, v.By)
	}
	slices.Sort(by)
	if !slices.Equal(by, []string{"ic1", "ic2"}) || got.State != "approved" {
		t.Fatalf("request after racing votes: state %s, approvals %v; want approved by ic1 and ic2 once each", got.State, by)
	}

	// The approved request's certificate is issued once, whichever
	// replicas race for it.
	var issued atomic.Int32
	var bgSerial atomic.Uint64
	for i := range as {
		for range 2 {
			wg.Go(func() {
				if res, err := as[i].Cert(ctx, api.CertRequest{Tier: "break-glass", PublicKey: pubLine, RequestID: req.ID}); err == nil {
					issued.Add(1)
					bgSerial.Store(res.Serial)
				}
			})
		}
	}
	wg.Wait()
	if issued.Load() != 1 {
		t.Fatalf("request certificate issued %d times through 3 replicas, want 1", issued.Load())
	}

	// Join token: three hosts race one token through three replicas.
	tok := strings.TrimSpace(r.ok("", "sshward-ca", "join-token", "--dir", dirs[0], "--host", "web1.staging", "--tier", "staging"))
	var joined atomic.Int32
	var hostCert *ssh.Certificate
	var hostSigner ssh.Signer
	for i := range cas {
		wg.Go(func() {
			hp, hk, _ := ed25519.GenerateKey(rand.Reader)
			hs, _ := ssh.NewPublicKey(hp)
			res, err := fresh(i).Join(ctx, api.JoinRequest{Token: tok, PublicKey: string(ssh.MarshalAuthorizedKey(hs)), Tier: "staging"})
			if err == nil {
				joined.Add(1)
				pk, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(res.Certificate))
				signer, _ := ssh.NewSignerFromKey(hk)
				mu.Lock()
				hostCert, _ = pk.(*ssh.Certificate)
				hostSigner = signer
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if joined.Load() != 1 || hostCert == nil {
		t.Fatalf("one join token admitted %d hosts through 3 replicas, want 1", joined.Load())
	}

	// The joined host watches revocations on replica 2; a revocation made
	// through replica 1 reaches it at once (an etcd watch wakes replica
	// 2's stream; its heartbeat alone would take 10 s).
	events := make(chan api.RevocationEvent, 16)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go fresh(2).WatchRevocations(wctx, client.WatchRequest{Tier: "staging", Cert: hostCert, Signer: hostSigner}, func(ev api.RevocationEvent) error {
		events <- ev
		return nil
	})
	for ev := range events { // hello, then the snapshot
		if ev.Type == api.EventSnapshot {
			break
		}
	}
	second := serials[1]
	revokedAt := time.Now()
	r.ok("", "sshward-ca", "revoke", "--dir", dirs[1], "--serial", fmt.Sprint(second))
	for {
		select {
		case ev := <-events:
			if ev.Serial != second {
				continue
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("a revocation through replica 1 did not reach a watcher of replica 2 within 5 s")
		}
		break
	}
	t.Logf("revocation through replica 1 reached replica 2's watcher in %v", time.Since(revokedAt).Round(time.Millisecond))

	// Single use: two production hosts (joined through different
	// replicas) race to claim the break-glass certificate, each through
	// every replica: one claim succeeds in the whole fleet.
	type host struct {
		cert   *ssh.Certificate
		signer ssh.Signer
	}
	var prod []host
	for i, name := range []string{"db1.prod", "db2.prod"} {
		jt := strings.TrimSpace(r.ok("", "sshward-ca", "join-token", "--dir", dirs[i], "--host", name, "--tier", "production"))
		hp, hk, _ := ed25519.GenerateKey(rand.Reader)
		hs, _ := ssh.NewPublicKey(hp)
		res, err := fresh(i).Join(ctx, api.JoinRequest{Token: jt, PublicKey: string(ssh.MarshalAuthorizedKey(hs)), Tier: "production"})
		if err != nil {
			t.Fatalf("join %s: %v", name, err)
		}
		pk, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(res.Certificate))
		signer, _ := ssh.NewSignerFromKey(hk)
		prod = append(prod, host{pk.(*ssh.Certificate), signer})
	}
	var claimed atomic.Int32
	for h := range prod {
		for i := range cas {
			wg.Go(func() {
				_, err := fresh(i).ClaimSingleUse(ctx, bgSerial.Load(), api.SingleUseClaim{RequestID: req.ID, SessionID: fmt.Sprintf("s-%d-%d", h, i)}, prod[h].cert, prod[h].signer)
				if err == nil {
					claimed.Add(1)
				}
			})
		}
	}
	wg.Wait()
	if claimed.Load() != 1 {
		t.Fatalf("the single-use certificate was claimed %d times by 2 hosts through 3 replicas, want 1", claimed.Load())
	}

	// Lockout counts across replicas: five wrong passwords spread over
	// the three replicas lock bob out of all of them (each replica alone
	// saw at most two).
	for i := range 5 {
		wg.Go(func() {
			fresh(i%3).Login(ctx, api.LoginRequest{User: "bob", Password: "wrong-password-" + fmt.Sprint(i)})
		})
	}
	wg.Wait()
	if _, err := fresh(2).Login(ctx, api.LoginRequest{User: "bob", Password: "bob-password-1"}); err == nil {
		t.Fatal("bob logged in with 5 failures counted across replicas: the lockout is per replica")
	}

	// Logout through one replica ends the session on the others at once
	// (ic2's: alice is locked out for a while by the replays above, each
	// counted as a failure).
	c0, c2 := fresh(0), fresh(2)
	c0.SetToken(icTok["ic2"])
	c2.SetToken(icTok["ic2"])
	if _, err := c2.Session(ctx); err != nil {
		t.Fatalf("session from replica 0 on replica 2: %v", err)
	}
	if err := c0.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	var ae *api.Error
	if _, err := c2.Session(ctx); !errors.As(err, &ae) || ae.Status != 401 {
		t.Fatalf("session logged out through replica 0 still answers on replica 2: %v", err)
	}

	// Kill the etcd leader: every replica keeps issuing.
	lead := ec.Leader(ctx)
	if lead < 0 {
		t.Fatal("no etcd leader")
	}
	ec.Kill(lead)
	for i := range as {
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err := as[i].Cert(ctx, api.CertRequest{Tier: "staging", PublicKey: pubLine})
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica %d does not issue with etcd member %d dead: %v", i, lead, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	// One audit chain, verified through any replica, holding every
	// issuance once.
	var v struct {
		OK      bool `json:"ok"`
		Records int  `json:"records"`
	}
	if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "audit", "verify", "--dir", dirs[2], "--json")), &v); err != nil || !v.OK {
		t.Fatalf("audit verify through replica 2: %v %+v", err, v)
	}
	var evs []struct {
		Serial uint64 `json:"serial"`
	}
	if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "audit", "list", "--dir", dirs[1], "--type", "cert.issue", "--json")), &evs); err != nil {
		t.Fatal(err)
	}
	inAudit := map[uint64]int{}
	for _, ev := range evs {
		inAudit[ev.Serial]++
	}
	for _, s := range serials {
		if inAudit[s] != 1 {
			t.Fatalf("serial %d is %d times in the audit log, want once", s, inAudit[s])
		}
	}

	// Backup refuses an etcd store in one line.
	if res := r.run("", "sshward-ca", "backup", "--dir", dirs[0], "--to", filepath.Join(work, "b.age")); res.code == 0 || !strings.Contains(res.stderr, "etcdctl snapshot save") {
		t.Fatalf("backup of an etcd CA: %+v", res)
	}
}

// TestReplicasOnEtcdSurviveKills issues through three replicas at once
// while the etcd leader is killed and then one CA replica (SIGKILL):
// every acknowledged certificate is in the audit chain exactly once, no
// serial repeats, the chain verifies, and the survivors kept issuing.
func TestReplicasOnEtcdSurviveKills(t *testing.T) {
	ec := etcdtest.Start(t, 3)
	ctx := t.Context()
	work := t.TempDir()
	r := &runner{t: t, env: []string{"SSHWARD_CA_PASSPHRASE=e2e-passphrase-123", "SSHWARD_HOME=" + filepath.Join(work, "home"), "SSH_AUTH_SOCK="}}
	dir0 := filepath.Join(work, "ca0")
	initRes := initOnEtcd(t, r, dir0, ec.Endpoints(), "kills")
	r.ok("carol-password-1\n", "sshward-ca", "users", "add", "carol", "--dir", dir0, "--groups", "engineers", "--password-stdin")
	dirs := []string{dir0, filepath.Join(work, "ca1"), filepath.Join(work, "ca2")}
	for _, d := range dirs[1:] {
		if out, err := exec.Command("cp", "-a", dir0, d).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, out)
		}
	}
	var cas []*client.Client
	var procs []*exec.Cmd
	var tok string
	for i, d := range dirs {
		addr := freeAddr(t)
		procs = append(procs, startCA(t, r, d, addr))
		c, err := client.New(client.Config{URL: "https://" + addr, Fingerprint: initRes.Fingerprint, Timeout: 20 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			res, err := c.Login(ctx, api.LoginRequest{User: "carol", Password: "carol-password-1"})
			if err != nil {
				t.Fatal(err)
			}
			tok = res.Token
		}
		cas = append(cas, c)
	}
	for _, c := range cas {
		c.SetToken(tok)
	}
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	sshPub, _ := ssh.NewPublicKey(pub)
	pubLine := string(ssh.MarshalAuthorizedKey(sshPub))

	var (
		mu      sync.Mutex
		acked   []uint64
		perRepl [3]int
		wg      sync.WaitGroup
		stop    atomic.Bool
	)
	const total = 300
	for i := range cas {
		for range 8 {
			wg.Go(func() {
				for !stop.Load() {
					res, err := cas[i].Cert(ctx, api.CertRequest{Tier: "staging", PublicKey: pubLine})
					if err != nil {
						time.Sleep(50 * time.Millisecond) // an election, or a dead replica
						continue
					}
					mu.Lock()
					acked = append(acked, res.Serial)
					perRepl[i]++
					if len(acked) >= total {
						stop.Store(true)
					}
					mu.Unlock()
				}
			})
		}
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	waitFor := func(n int) {
		deadline := time.Now().Add(90 * time.Second)
		for count() < n && !stop.Load() {
			if time.Now().After(deadline) {
				stop.Store(true)
				wg.Wait()
				t.Fatalf("only %d of %d issuances acknowledged in 90 s", count(), n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor(total / 3)
	lead := ec.Leader(ctx)
	if lead < 0 {
		t.Fatal("no etcd leader")
	}
	ec.Kill(lead)
	waitFor(total / 2)
	procs[2].Process.Kill()
	mu.Lock()
	after := perRepl
	mu.Unlock()
	waitFor(total)
	stop.Store(true)
	wg.Wait()
	if perRepl[0] == after[0] || perRepl[1] == after[1] {
		t.Fatalf("survivors stopped issuing after the kills: before %v, at the end %v", after, perRepl)
	}

	dup := map[uint64]bool{}
	for _, s := range acked {
		if dup[s] {
			t.Fatalf("serial %d acknowledged twice", s)
		}
		dup[s] = true
	}
	var v struct {
		OK      bool `json:"ok"`
		Records int  `json:"records"`
	}
	if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "audit", "verify", "--dir", dirs[1], "--json")), &v); err != nil || !v.OK {
		t.Fatalf("audit verify after the kills: %v %+v", err, v)
	}
	var evs []struct {
		Serial  uint64 `json:"serial"`
		Outcome string `json:"outcome"`
	}
	if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", "audit", "list", "--dir", dirs[0], "--type", "cert.issue", "--json")), &evs); err != nil {
		t.Fatal(err)
	}
	inAudit := map[uint64]int{}
	for _, ev := range evs {
		if ev.Outcome != "ok" {
			continue // a refusal (e.g. the replica's request ended during the election) issues nothing
		}
		inAudit[ev.Serial]++
		if inAudit[ev.Serial] > 1 {
			t.Fatalf("serial %d issued twice in the audit log", ev.Serial)
		}
	}
	for _, s := range acked {
		if inAudit[s] != 1 {
			t.Fatalf("acknowledged serial %d is not in the audit log", s)
		}
	}
	t.Logf("%d acknowledged issuances (per replica %v), %d in the audit chain of %d records; etcd member %d and CA replica 2 killed mid-way", len(acked), perRepl, len(evs), v.Records, lead)
}

// initOnEtcd makes a CA in dir whose store is the etcd cluster at
// endpoints (a prefix of its own), as the first of several replicas;
// initArgs go to sshward-ca init.
func initOnEtcd(t *testing.T, r *runner, dir string, endpoints []string, prefix string, initArgs ...string) (res struct {
	Fingerprint string `json:"fingerprint"`
}) {
	t.Helper()
	if err := json.Unmarshal([]byte(r.ok("", "sshward-ca", append([]string{"init", "--dir", dir, "--json"}, initArgs...)...)), &res); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.OpenFile(filepath.Join(dir, "config.yaml"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(cfg, "store:\n  etcd:\n    endpoints: [%s]\n    prefix: %s-%d\n", strings.Join(endpoints, ", "), prefix, time.Now().UnixNano())
	if err := cfg.Close(); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "ca.db")) // unused on etcd: nothing may read it by mistake
	return res
}
