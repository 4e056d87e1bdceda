package ca_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/policy"
	"github.com/sshward/sshward/ca/store"
)

// TestSingleUseClaims: the CA is the authority of use. Each row is one
// claim over real HTTPS with a real host certificate, in order; the rows
// after the first success are the attacks (another host, the same host in
// another session, a host the request does not name, a forged request id).
func TestSingleUseClaims(t *testing.T) {
	w := newReqWorld(t)
	ctx := context.Background()
	r := w.create(t, "olivia", api.CreateRequest{Reason: "INC-90 db1 disk full", Hosts: []string{"DB1.prod", "db1.prod", "db3.prod"}})
	if got := fmt.Sprint(r.Hosts); got != "[db1.prod db3.prod]" {
		t.Fatalf("request hosts %s, want normalised [db1.prod db3.prod]", got)
	}
	if seen := w.get(t, "ian", r.ID); fmt.Sprint(seen.Hosts) != "[db1.prod db3.prod]" {
		t.Fatalf("the approver sees hosts %v", seen.Hosts)
	}
	w.approve(t, r.ID, "ian", "ivy")
	cert, _, _, err := w.cert(t, "olivia", api.CertRequest{RequestID: r.ID})
	if err != nil {
		t.Fatal(err)
	}
	if got := cert.Extensions[api.ExtHosts]; got != "db1.prod,db3.prod" {
		t.Fatalf("%s = %q", api.ExtHosts, got)
	}
	db1, db1Key := joinHost(t, w, "db1.prod", "production")
	db2, db2Key := joinHost(t, w, "db2.prod", "production")
	db3, db3Key := joinHost(t, w, "db3.prod", "production")
	web, webKey := joinHost(t, w, "web1.staging", "staging")
	anon := w.ca.Client(t, "")
	claim := func(sess string) api.SingleUseClaim {
		return api.SingleUseClaim{RequestID: r.ID, SessionID: sess, ClientAddr: "192.0.2.7:50000"}
	}

	tests := []struct {
		name   string
		serial uint64
		claim  api.SingleUseClaim
		host   string
		code   string // "" = admitted
		say    string
	}{
		{"staging host", cert.Serial, claim("s-web"), "web1.staging", api.CodeForbidden, "hosts of tier staging do not accept break-glass"},
		{"host not named by the request", cert.Serial, claim("s-db2"), "db2.prod", api.CodeForbidden, "for db1.prod, db3.prod only, not db2.prod"},
		{"forged request id", cert.Serial, api.SingleUseClaim{RequestID: "REQ-AAAAAAAA", SessionID: "s1"}, "db1.prod", api.CodeForbidden, "was not issued for access request"},
		{"unknown serial", cert.Serial + 1, claim("s1"), "db1.prod", api.CodeNotFound, "not a user certificate issued by this CA"},
		{"first use", cert.Serial, claim("s1"), "db1.prod", "", ""},
		{"same connection asks again", cert.Serial, claim("s1"), "db1.prod", "", ""},
		{"same host, another session", cert.Serial, claim("s2"), "db1.prod", api.CodeAlreadyUsed, "already used (on db1.prod"},
		{"second listed host", cert.Serial, claim("s3"), "db3.prod", api.CodeAlreadyUsed, "already used"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hc, hk := db1, db1Key
			switch tt.host {
			case "db2.prod":
				hc, hk = db2, db2Key
			case "db3.prod":
				hc, hk = db3, db3Key
			case "web1.staging":
				hc, hk = web, webKey
			}
			got, err := anon.ClaimSingleUse(ctx, tt.serial, tt.claim, hc, hk)
			if tt.code == "" {
				if err != nil || got.Serial != tt.serial || got.Host != "db1.prod" || got.RequestID != r.ID {
					t.Fatalf("claim: %v %+v", err, got)
				}
				return
			}
			wantRefusal(t, err, tt.code, tt.say)
		})
	}

	// The request is done, used on db1.prod; its requester sees it.
	if got := w.get(t, "olivia", r.ID); got.State != api.StateDone || got.UsedOn != "db1.prod" {
		t.Fatalf("request after the claim: %s on %q", got.State, got.UsedOn)
	}
	// Without host authentication there is nothing to claim.
	if err := anon.Do(ctx, http.MethodPost, api.SingleUseClaimPath(cert.Serial), claim("s9"), nil); !api.IsCode(err, api.CodeUnauthenticated) {
		t.Fatalf("claim without host auth: %v", err)
	}
	// Audit: one request.use, and one alert per reuse with host and address.
	evs, err := w.ca.Store.Audit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var uses, reuses []store.AuditEvent
	for _, e := range evs {
		switch e.Type {
		case ca.EventRequestUse:
			uses = append(uses, e)
		case ca.EventReuseRefused:
			reuses = append(reuses, e)
		}
	}
	if len(uses) != 1 || uses[0].Details["host"] != "db1.prod" || uses[0].Outcome != store.OutcomeOK {
		t.Errorf("request.use events: %+v", uses)
	}
	if len(reuses) != 2 {
		t.Fatalf("want 2 %s events, got %+v", ca.EventReuseRefused, reuses)
	}
	for i, host := range []string{"db1.prod", "db3.prod"} {
		e := reuses[i]
		if e.Outcome != store.OutcomeRefused || e.Details["severity"] != "alert" || e.Details["host"] != host ||
			e.ClientAddr != "192.0.2.7:50000" || e.Details["host_addr"] == "" || e.Details["first_host"] != "db1.prod" ||
			e.Serial != cert.Serial || e.RequestID != r.ID || e.Subject != "olivia" {
			t.Errorf("reuse event %d: %+v", i, e)
		}
	}
	if rep, err := w.ca.Store.VerifyAudit(ctx); err != nil {
		t.Fatalf("audit chain: %v %+v", err, rep)
	}

	// Hosts must be host names.
	for _, bad := range [][]string{{"db1.prod;rm"}, {"-db1"}, {""}, {"a..b"}} {
		_, err := w.users["olivia"].CreateRequest(ctx, api.CreateRequest{Tier: api.TierBreakGlass, Reason: "INC-91", Hosts: bad})
		wantRefusal(t, err, api.CodeBadRequest, "not a valid host name")
	}
}

// TestSingleUseClaimRace: two production hosts claim one serial at once,
// several times over; exactly one claim wins each round.
func TestSingleUseClaimRace(t *testing.T) {
	w := newReqWorld(t)
	ctx := context.Background()
	db1, db1Key := joinHost(t, w, "db1.prod", "production")
	db2, db2Key := joinHost(t, w, "db2.prod", "production")
	anon := w.ca.Client(t, "")
	for round := range 3 {
		r := w.create(t, "olivia", api.CreateRequest{Reason: fmt.Sprintf("INC-%d", 100+round)})
		w.approve(t, r.ID, "ian", "ivy")
		cert, _, _, err := w.cert(t, "olivia", api.CertRequest{RequestID: r.ID})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		won, used := 0, 0
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				hc, hk := db1, db1Key
				if i%2 == 1 {
					hc, hk = db2, db2Key
				}
				_, err := anon.ClaimSingleUse(ctx, cert.Serial, api.SingleUseClaim{RequestID: r.ID, SessionID: fmt.Sprintf("s%d", i)}, hc, hk)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					won++
				case api.IsCode(err, api.CodeAlreadyUsed):
					used++
				default:
					t.Errorf("claim %d: %v", i, err)
				}
			}()
		}
		wg.Wait()
		if won != 1 || used != 7 {
			t.Fatalf("round %d: %d claims won, %d refused; want 1 and 7", round, won, used)
		}
	}
}

// TestSingleUseWithoutRequest: a tier may be single use without
// approvals; its certificates are claimed by serial alone, audited as
// single_use.claim, and the second host is refused all the same.
func TestSingleUseWithoutRequest(t *testing.T) {
	pol := strings.Replace(string(policy.Default()), "single_use: false", "single_use: true", 1) // staging
	c := catest.New(t, catest.Options{Policy: []byte(pol)})
	c.AddUser(t, "erin", pw, []string{"engineers"}, false)
	erin := c.Client(t, c.Login(t, "erin", pw, ""))
	ctx := context.Background()
	_, pub := keyPair(t, t.TempDir(), "erin")
	resp, err := erin.Cert(ctx, api.CertRequest{Tier: api.TierStaging, PublicKey: pub})
	if err != nil {
		t.Fatal(err)
	}
	w := &reqWorld{ca: c}
	web1, web1Key := joinHost(t, w, "web1.staging", "staging")
	web2, web2Key := joinHost(t, w, "web2.staging", "staging")
	anon := c.Client(t, "")
	if _, err := anon.ClaimSingleUse(ctx, resp.Serial, api.SingleUseClaim{SessionID: "a"}, web1, web1Key); err != nil {
		t.Fatalf("first claim: %v", err)
	}
	_, err = anon.ClaimSingleUse(ctx, resp.Serial, api.SingleUseClaim{SessionID: "b", ClientAddr: "198.51.100.9:4242"}, web2, web2Key)
	wantRefusal(t, err, api.CodeAlreadyUsed, "already used (on web1.staging")
	for typ, want := range map[string]string{ca.EventSingleUseClaim: store.OutcomeOK, ca.EventReuseRefused: store.OutcomeRefused} {
		evs, err := c.Store.Audit(ctx, store.AuditFilter{Type: typ})
		if err != nil || len(evs) != 1 || evs[0].Outcome != want || evs[0].Serial != resp.Serial || evs[0].Subject != "erin" {
			t.Errorf("%s events: %v %+v", typ, err, evs)
		}
	}
}

// BenchmarkClaimSingleUse measures what fleet-wide single use adds to a
// login: one host-authenticated HTTPS claim with its durable store write
// (claim + audit record), at concurrency 1 (one login at a time).
func BenchmarkClaimSingleUse(b *testing.B) {
	c := catest.New(b, catest.Options{})
	c.AddUser(b, "erin", pw, []string{"engineers"}, false)
	erin := c.Client(b, c.Login(b, "erin", pw, ""))
	ctx := context.Background()
	_, pub := keyPair(b, b.TempDir(), "erin")
	serials := make([]uint64, b.N)
	for i := range serials {
		resp, err := erin.Cert(ctx, api.CertRequest{Tier: api.TierStaging, PublicKey: pub})
		if err != nil {
			b.Fatal(err)
		}
		serials[i] = resp.Serial
	}
	w := &reqWorld{ca: c}
	host, key := joinHost(b, w, "web1.staging", "staging")
	anon := c.Client(b, "")
	b.ResetTimer()
	for i, s := range serials {
		if _, err := anon.ClaimSingleUse(ctx, s, api.SingleUseClaim{SessionID: fmt.Sprint(i)}, host, key); err != nil {
			b.Fatal(err)
		}
	}
}
