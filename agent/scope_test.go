package agent

import (
	"context"
	"errors"
	"maps"
	"os"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca"
	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
)

// scopePolicy: production needs one approval, except certificates scoped
// to the billing hosts (self-service by approval rule).
const scopePolicy = `tiers:
  production:
    ttl: 15m
    approvals: 1
    approvers: [prod-leads]
    extensions: [permit-pty]
    principals: {sre: ["{{user}}"]}
    approval_rules:
      - {name: billing-self-service, labels: {app: billing}, approvals: 0}
      - {name: billing1-self-service, hosts: [billing1], approvals: 0}
`

// startScopedAgent starts a production agent of w whose host certificate
// names 127.0.0.1, localhost and name, with labels.
func startScopedAgent(t *testing.T, w *catest.CA, name string, labels map[string]string) *testAgent {
	t.Helper()
	tok, err := w.Authority.NewJoinToken(context.Background(), ca.JoinTokenRequest{Names: []string{"127.0.0.1", "localhost", name}, Tier: api.TierProduction})
	if err != nil {
		t.Fatal(err)
	}
	cl := caClient(t, w)
	return startAgent(t, nil, agentOpts{tier: api.TierProduction, noToken: true, cfg: func(c *Config) {
		c.CA, c.JoinToken, c.HostName, c.Labels = cl, tok.Token, name, labels
	}})
}

// TestScopeRealCA: a certificate the real CA scoped to hosts or labels
// works on a matching host, is refused elsewhere with the scope in the
// message, cannot be widened by editing it, and cannot be had unscoped
// without approval. Real CA over HTTPS, real agents, OpenSSH's ssh.
func TestScopeRealCA(t *testing.T) {
	catest.NeedOpenSSH(t)
	w := catest.New(t, catest.Options{Policy: []byte(scopePolicy)})
	billing := startScopedAgent(t, w, "billing1", map[string]string{"app": "billing", "env": "prod"})
	db := startScopedAgent(t, w, "db1", map[string]string{"app": "db", "env": "prod"})
	cb, cd := realSSHClient(t, w, billing), realSSHClient(t, w, db)
	login := currentUser(t)
	ctx := context.Background()
	if _, err := w.Authority.AddUser(ctx, ca.AddUserRequest{Name: login, Password: "correct horse battery", Groups: []string{"sre"}}); err != nil && !errors.Is(err, ca.ErrUserExists) {
		t.Fatal(err)
	}
	cl := w.Client(t, w.Login(t, login, "correct horse battery", ""))
	issue := func(t *testing.T, hosts []string, labels map[string]string) (*userKey, error) {
		k := mint(t, cb.home, newSigner(t), ssh.Certificate{ValidBefore: ssh.CertTimeInfinity}, nil) // a key pair on disk
		resp, err := cl.Cert(ctx, api.CertRequest{Tier: api.TierProduction, PublicKey: string(ssh.MarshalAuthorizedKey(k.signer.PublicKey())),
			Hosts: hosts, Labels: labels})
		if err != nil {
			return nil, err
		}
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(resp.Certificate))
		if err != nil {
			t.Fatal(err)
		}
		k.cert = pub.(*ssh.Certificate)
		if err := os.WriteFile(k.certPath, []byte(resp.Certificate), 0o600); err != nil {
			t.Fatal(err)
		}
		return k, nil
	}
	refused := func(t *testing.T, c *sshClient, a *testAgent, k *userKey, reason string, msg ...string) {
		t.Helper()
		out, errOut, err := c.run(k, login, nil, "echo in")
		if err == nil || strings.Contains(out, "in") {
			t.Fatalf("admitted: %v %q %q", err, out, errOut)
		}
		for _, m := range msg {
			if !strings.Contains(errOut, m) {
				t.Errorf("refusal %q does not say %q", errOut, m)
			}
		}
		a.logs.find(t, map[string]string{"msg": "audit", "action": AuditAdmissionRefused, "key_id": k.cert.KeyId, "reason": reason})
	}
	admitted := func(t *testing.T, c *sshClient, k *userKey) {
		t.Helper()
		if out, errOut, err := c.run(k, login, nil, "echo in"); err != nil || out != "in\n" {
			t.Fatalf("refused on a matching host: %v %q %q", err, out, errOut)
		}
	}

	t.Run("label scope: billing host admits, db host refuses naming the scope", func(t *testing.T) {
		k, err := issue(t, nil, map[string]string{"app": "billing"})
		if err != nil {
			t.Fatal(err)
		}
		if got := k.cert.CriticalOptions[api.CritScope]; got != "label=app:billing" {
			t.Fatalf("critical option %s = %q", api.CritScope, got)
		}
		admitted(t, cb, k)
		// The attacker holds a billing-scoped certificate and tries the db host.
		refused(t, cd, db, k, reasonOutOfScope, "scoped to labels app=billing", "db1", "outside that scope")
	})
	t.Run("host scope: billing1 admits, db1 refuses", func(t *testing.T) {
		k, err := issue(t, []string{"billing1"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		admitted(t, cb, k)
		refused(t, cd, db, k, reasonOutOfScope, "scoped to hosts billing1")
	})
	t.Run("label mismatch: every label must match", func(t *testing.T) {
		// app=billing makes it self-service; env=staging is not this host's.
		k, err := issue(t, nil, map[string]string{"app": "billing", "env": "staging"})
		if err != nil {
			t.Fatal(err)
		}
		refused(t, cb, billing, k, reasonOutOfScope, "labels app=billing, env=staging", "billing1")
	})
	t.Run("edited scope: the signature breaks", func(t *testing.T) {
		k, err := issue(t, nil, map[string]string{"app": "billing"})
		if err != nil {
			t.Fatal(err)
		}
		for name, edit := range map[string]func(map[string]string){
			"rescoped to db": func(o map[string]string) { o[api.CritScope] = "label=app:db" },
			"scope removed":  func(o map[string]string) { delete(o, api.CritScope) },
		} {
			forged := *k.cert
			forged.CriticalOptions = maps.Clone(k.cert.CriticalOptions)
			edit(forged.CriticalOptions)
			// OpenSSH's ssh drops a certificate whose signature fails when it
			// loads it, so the forger uses a client that sends it as is.
			fk := *k
			fk.cert = &forged
			if cl, err := realGoSSHDial(t, w, db, &fk, login); err == nil {
				cl.Close()
				t.Fatalf("%s: forged certificate admitted", name)
			}
			db.logs.find(t, map[string]string{"msg": "agent: certificate refused", "reason": reasonBadSignature})
		}
	})
	t.Run("unscoped needs approval: the tier key signs nothing wider", func(t *testing.T) {
		_, err := issue(t, nil, nil)
		if !api.IsCode(err, api.CodeForbidden) || !strings.Contains(err.Error(), "approved by 1 of prod-leads") {
			t.Fatalf("unscoped certificate without approval: %v", err)
		}
		_, err = issue(t, nil, map[string]string{"app": "db"})
		if !api.IsCode(err, api.CodeForbidden) {
			t.Fatalf("db-scoped certificate without approval: %v", err)
		}
	})
	t.Run("stock sshd refuses a scoped certificate", func(t *testing.T) {
		k, err := issue(t, nil, map[string]string{"app": "billing"})
		if err != nil {
			t.Fatal(err)
		}
		d := catest.StartSSHD(t, catest.SSHDConfig{TrustedUserCAKeys: []string{string(ssh.MarshalAuthorizedKey(w.UserCAs[api.TierProduction].PublicKey()))},
			Principals: map[string][]string{login: {login}}})
		out, err := catest.SSH(ctx, d.Addr, login, k.keyPath, k.certPath, nil, "echo in")
		if err == nil || strings.Contains(out, "in\n") {
			t.Fatalf("stock sshd admitted a scoped certificate: %q", out)
		}
		// The control: the same fields without the scope, signed by the same
		// tier key, get in, so it was the scope that sshd refused.
		plain := *k.cert
		plain.CriticalOptions = maps.Clone(k.cert.CriticalOptions)
		delete(plain.CriticalOptions, api.CritScope)
		ck := mint(t, cb.home, w.UserCAs[api.TierProduction], plain, nil)
		if out, err := catest.SSH(ctx, d.Addr, login, ck.keyPath, ck.certPath, nil, "echo in"); err != nil || !strings.Contains(out, "in") {
			t.Fatalf("control certificate refused by sshd: %v %q\n%s", err, out, d.Log())
		}
	})
}
