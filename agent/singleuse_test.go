package agent

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
)

// ClaimSingleUse makes fakeCA the authority of use, as the real CA is
// (ca.Authority.ClaimSingleUse): the first claim of a serial wins, across
// every agent joined to this fake.
func (ca *fakeCA) ClaimSingleUse(ctx context.Context, serial uint64, claim api.SingleUseClaim, cert *ssh.Certificate, signer ssh.Signer) (*api.SingleUseClaimed, error) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if ca.down {
		return nil, errCADown
	}
	if ca.claims == nil {
		ca.claims = map[uint64]string{}
	}
	if prev, ok := ca.claims[serial]; ok && prev != claim.SessionID {
		return nil, &api.Error{Code: api.CodeAlreadyUsed, Status: http.StatusConflict, Message: "this single-use certificate was already used"}
	}
	ca.claims[serial] = claim.SessionID
	return &api.SingleUseClaimed{Serial: serial, Host: cert.ValidPrincipals[0], RequestID: claim.RequestID}, nil
}

// TestSingleUseFleet: the agent's side of fleet-wide single use and
// target hosts, with OpenSSH's ssh against agents of one (fake) CA.
// cmd/sshward's TestSingleUseFleetE2E runs the same attacks against the
// real CA over HTTPS.
func TestSingleUseFleet(t *testing.T) {
	ca := newFakeCA(t)
	a1 := startAgent(t, ca, agentOpts{tier: api.TierProduction})
	a2 := startAgent(t, ca, agentOpts{tier: api.TierProduction})
	c1, c2 := newSSHClient(t, ca, a1), newSSHClient(t, ca, a2)
	login := currentUser(t)
	single := func(extra map[string]string) map[string]string {
		ext := productionExt()
		ext[api.ExtTier] = api.TierBreakGlass
		ext[api.ExtSingleUse] = ""
		ext[api.ExtRequestID] = "REQ-TEST0001"
		for k, v := range extra {
			ext[k] = v
		}
		return ext
	}

	t.Run("second host refused", func(t *testing.T) {
		k := ca.issue(t, c1.home, certSpec{tier: api.TierBreakGlass, keyID: "su second host", principals: []string{login}, extensions: single(nil)})
		if out, errOut, err := c1.run(k, login, nil, "echo first"); err != nil || out != "first\n" {
			t.Fatalf("first use refused: %v %q %q", err, out, errOut)
		}
		out, errOut, err := c2.run(k, login, nil, "echo second")
		if err == nil || strings.Contains(out, "second") || !strings.Contains(errOut, "single-use certificate was already used") {
			t.Fatalf("second host admitted or said the wrong thing: %v %q %q", err, out, errOut)
		}
		a2.logs.find(t, map[string]string{"msg": "audit", "action": AuditAdmissionRefused, "key_id": "su second host", "reason": reasonSingleUse, "detail": "refused by the CA"})
		// The first host refuses from its own record too.
		_, errOut, err = c1.run(k, login, nil, "echo again")
		if err == nil || !strings.Contains(errOut, "already used") {
			t.Fatalf("first host admitted again: %v %q", err, errOut)
		}
	})

	t.Run("parallel on two hosts", func(t *testing.T) {
		for i := range 4 {
			k := ca.issue(t, c1.home, certSpec{tier: api.TierBreakGlass, keyID: "su parallel", principals: []string{login}, extensions: single(nil)})
			var wg sync.WaitGroup
			outs := make([]string, 2)
			for j, c := range []*sshClient{c1, c2} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					outs[j], _, _ = c.run(k, login, nil, "echo in")
				}()
			}
			wg.Wait()
			if n := strings.Count(outs[0]+outs[1], "in\n"); n != 1 {
				t.Fatalf("round %d: %d sessions started, want exactly 1 (%q)", i, n, outs)
			}
		}
	})

	t.Run("CA down fails closed", func(t *testing.T) {
		k := ca.issue(t, c1.home, certSpec{tier: api.TierBreakGlass, keyID: "su ca down", principals: []string{login}, extensions: single(nil)})
		ca.setDown(true)
		out, errOut, err := c1.run(k, login, nil, "echo in")
		ca.setDown(false)
		if err == nil || strings.Contains(out, "in") || !strings.Contains(errOut, "The CA could not be reached to confirm that this single-use certificate is unused") {
			t.Fatalf("admitted without the CA or said the wrong thing: %v %q %q", err, out, errOut)
		}
		a1.logs.find(t, map[string]string{"msg": "audit", "action": AuditAdmissionRefused, "key_id": "su ca down", "reason": reasonSingleUseCA})
		// Nothing was spent: with the CA back, the certificate works once.
		if out, errOut, err := c1.run(k, login, nil, "echo back"); err != nil || out != "back\n" {
			t.Fatalf("after the CA came back: %v %q %q", err, out, errOut)
		}
	})

	t.Run("target hosts", func(t *testing.T) {
		// fakeCA's host certificates name 127.0.0.1, localhost and web1.
		tests := []struct {
			name, hosts string
			admit       bool
		}{
			{"listed", "db1.prod,WEB1", true},
			{"other host", "db1.prod,db2.prod", false},
			{"empty list", "", false},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				keyID := "su hosts " + tt.name
				k := ca.issue(t, c1.home, certSpec{tier: api.TierProduction, keyID: keyID, principals: []string{login},
					extensions: map[string]string{extPermitPTY: "", api.ExtTier: api.TierProduction, api.ExtHosts: tt.hosts}})
				out, errOut, err := c1.run(k, login, nil, "echo in")
				if tt.admit {
					if err != nil || out != "in\n" {
						t.Fatalf("listed host refused: %v %q %q", err, out, errOut)
					}
					return
				}
				if err == nil || strings.Contains(out, "in") || !strings.Contains(errOut, "not web1") {
					t.Fatalf("unlisted host admitted or message lacks the host: %v %q %q", err, out, errOut)
				}
				a1.logs.find(t, map[string]string{"msg": "audit", "action": AuditAdmissionRefused, "key_id": keyID, "reason": reasonHostNotListed})
			})
		}
	})
}
