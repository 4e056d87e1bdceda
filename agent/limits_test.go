package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/catest"
	"github.com/sshward/sshward/ca/client"
)

func TestCheckLifetime(t *testing.T) {
	now := uint64(1_800_000_000)
	prod := caLimit{tier: api.TierProduction, maxTTL: 30 * time.Minute, learned: true}
	tests := []struct {
		name          string
		after, before uint64
		want          string
	}{
		{"as the CA issues: max_ttl + 1 min backdate", now - 60, now + 30*60, ""},
		{"one second more", now - 61, now + 30*60, reasonTooLong},
		{"a day", now - 60, now + 24*3600, reasonTooLong},
		{"never expires", now - 60, ssh.CertTimeInfinity, reasonUnbounded},
		{"valid since 1970", 0, now + 60, reasonUnbounded},
		{"forever both ways", 0, ssh.CertTimeInfinity, reasonUnbounded},
		{"empty window: left to checkValidity", now, now, ""},
		{"negative after: left to checkValidity", 1 << 63, now, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, detail := checkLifetime(&ssh.Certificate{ValidAfter: tt.after, ValidBefore: tt.before}, prod)
			if got != tt.want {
				t.Fatalf("checkLifetime = %q (%s), want %q", got, detail, tt.want)
			}
			if got == reasonTooLong && !strings.Contains(detail, "max_ttl=30m0s tier=production limit_from=ca") {
				t.Errorf("detail %q does not name the limit and where it came from", detail)
			}
		})
	}
}

// TestLimitFallback: a user-CA key whose limit the CA never sent gets the
// default policy's max_ttl of the host's tier; strict for unknown tiers.
func TestLimitFallback(t *testing.T) {
	key := newSigner(t).PublicKey()
	for tier, want := range map[string]time.Duration{
		api.TierStaging: 2 * time.Hour, api.TierProduction: 30 * time.Minute,
		api.TierBreakGlass: 10 * time.Minute, "custom": 30 * time.Minute,
	} {
		id := &hostIdentity{tier: tier}
		if l := id.limitFor(key); l.maxTTL != want || l.learned {
			t.Errorf("tier %s: limit %+v, want %v (default)", tier, l, want)
		}
	}
	// Limits of keys the host does not trust, and empty ones, are ignored.
	line := string(ssh.MarshalAuthorizedKey(key))
	got, err := indexLimits([]api.UserCALimit{
		{Tier: "x", UserCA: line, MaxTTL: api.Duration(time.Hour)},
	}, map[string]bool{})
	if err != nil || len(got) != 0 {
		t.Errorf("untrusted key's limit kept: %v %v", got, err)
	}
	got, _ = indexLimits([]api.UserCALimit{{Tier: "x", UserCA: line}}, map[string]bool{string(key.Marshal()): true})
	if len(got) != 0 {
		t.Errorf("zero max_ttl kept: %v", got)
	}
}

// TestLifetimeRefusals is issue 8 §4's refusal suite for certificates that
// claim more than the tier allows. The attacker holds the REAL production
// (or break-glass) user-CA key of a running CA and mints certificates the
// agent would otherwise admit; stock OpenSSH ssh offers them to a
// production agent that joined that CA. Each row must fail to log in, show
// the banner, log and audit the reason, and admit nothing (no
// admission.accepted event, no recording). The control rows are the CA's
// own issuance and a certificate exactly at the limit: both log in.
func TestLifetimeRefusals(t *testing.T) {
	catest.NeedOpenSSH(t)
	w := startRealCA(t)
	al := &auditLog{}
	a := startRealAgent(t, w, agentOpts{tier: api.TierProduction, cfg: withAudit(al)})
	c := realSSHClient(t, w, a)
	login := currentUser(t)
	prodKey, bgKey := w.UserCAs[api.TierProduction], w.UserCAs[api.TierBreakGlass]

	// The limits came from the CA and are cached in the data directory.
	fi, err := os.Stat(filepath.Join(a.dataDir, fileUserCALimits))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("limits cache: %v %v", err, fi)
	}
	a.logs.find(t, map[string]string{"msg": "agent: serving", "user_ca_limits": "break-glass=10m0s(ca),production=30m0s(ca)"})

	now := time.Now()
	at := func(d time.Duration) uint64 { return uint64(now.Add(d).Unix()) }
	tmpl := func(keyID string, after, before uint64) ssh.Certificate {
		return ssh.Certificate{Serial: uint64(now.UnixNano()), KeyId: keyID, ValidPrincipals: []string{login},
			ValidAfter: after, ValidBefore: before,
			Permissions: ssh.Permissions{Extensions: productionExt()}}
	}
	tests := []struct {
		name   string
		signer ssh.Signer
		cert   ssh.Certificate
		reason string // "" logs in
	}{
		{"production key, 24 h", prodKey, tmpl("case 24h", at(-time.Minute), at(24*time.Hour)), reasonTooLong},
		{"production key, max_ttl + 2 min", prodKey, tmpl("case 32m", at(-time.Minute), at(31*time.Minute)), reasonTooLong},
		{"production key, never expires", prodKey, tmpl("case forever", at(-time.Minute), ssh.CertTimeInfinity), reasonUnbounded},
		{"production key, valid since 1970", prodKey, tmpl("case epoch", 0, at(10*time.Minute)), reasonUnbounded},
		{"break-glass key, production's 30 min", bgKey, tmpl("case bg 30m", at(-time.Minute), at(29*time.Minute)), reasonTooLong},
		{"production key, exactly max_ttl + backdate", prodKey, tmpl("case at limit", at(-time.Minute), at(30*time.Minute)), ""},
		{"break-glass key, exactly its max_ttl + backdate", bgKey, tmpl("case bg at limit", at(-time.Minute), at(10*time.Minute)), ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cert.Serial += uint64(i)
			k := mint(t, c.home, tt.signer, tt.cert, nil)
			out, errOut, err := c.run(k, login, nil, "echo logged-in")
			keyID := tt.cert.KeyId
			if tt.reason == "" {
				if err != nil || out != "logged-in\n" {
					t.Fatalf("certificate within the limit refused: %v %q %q", err, out, errOut)
				}
				al.find(t, func(ev AuditEvent) bool { return ev.Action == AuditAdmitted && ev.KeyID == keyID })
				return
			}
			if err == nil || strings.Contains(out, "logged-in") {
				t.Fatalf("ssh logged in with %s (err %v, stdout %q)", tt.name, err, out)
			}
			if !strings.Contains(errOut, "access denied") || !strings.Contains(errOut, "sshward cert") || !strings.Contains(errOut, "Permission denied") {
				t.Errorf("ssh stderr %q: want the banner that says how to get a fresh certificate", errOut)
			}
			if strings.Contains(errOut, tt.reason) {
				t.Errorf("ssh stderr %q reveals the reason", errOut)
			}
			a.logs.find(t, map[string]string{"msg": "agent: certificate refused", "reason": tt.reason, "key_id": keyID})
			ev := al.find(t, func(ev AuditEvent) bool {
				return ev.Action == AuditAdmissionRefused && ev.KeyID == keyID && ev.Reason == tt.reason
			})
			if ev.Serial != tt.cert.Serial || ev.Principal != login {
				t.Errorf("audit event %+v: want serial %d principal %s", ev, tt.cert.Serial, login)
			}
			for _, e := range al.events() {
				if e.KeyID == keyID && (e.Action == AuditAdmitted || e.Action == AuditSessionStart) {
					t.Errorf("refused certificate admitted: %+v", e)
				}
			}
			for _, m := range readRecordings(t, SpoolDir(a.dataDir)) {
				if m.KeyID == keyID {
					t.Errorf("refused certificate has a recording: %+v", m)
				}
			}
		})
	}

	t.Run("a certificate the CA issues logs in", func(t *testing.T) {
		// Regression guard: the agent must not be stricter than the CA
		// (max_ttl and the CA's real backdating).
		secret := w.AddUser(t, login, "correct horse battery", []string{"sre"}, true)
		tok := w.Login(t, login, "correct horse battery", catest.Code(t, secret, time.Now()))
		k := mint(t, c.home, newSigner(t), ssh.Certificate{ValidBefore: ssh.CertTimeInfinity}, nil) // a key pair on disk
		resp, err := w.Client(t, tok).Cert(context.Background(), api.CertRequest{Tier: api.TierProduction,
			PublicKey: string(ssh.MarshalAuthorizedKey(k.signer.PublicKey())), TTL: api.Duration(30 * time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(k.certPath, []byte(resp.Certificate), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, errOut, err := c.run(k, login, nil, "echo logged-in"); err != nil || out != "logged-in\n" {
			t.Fatalf("CA-issued production certificate (max_ttl) refused: %v %q %q", err, out, errOut)
		}
	})

	t.Run("restart without the CA enforces the cached limits", func(t *testing.T) {
		if err := a.stop(); err != nil && err != ErrServerClosed {
			t.Fatal(err)
		}
		// The same data directory; the CA's address now answers nothing.
		down, err := client.New(client.Config{URL: "https://127.0.0.1:1", RootPEM: w.RootPEM})
		if err != nil {
			t.Fatal(err)
		}
		b := startAgent(t, nil, agentOpts{tier: api.TierProduction, dataDir: a.dataDir, noToken: true,
			cfg: func(c *Config) { c.CA = down }})
		b.logs.find(t, map[string]string{"msg": "agent: serving", "user_ca_limits": "break-glass=10m0s(ca),production=30m0s(ca)"})
		c2 := realSSHClient(t, w, b)
		k := mint(t, c2.home, bgKey, tmpl("case bg after restart", at(-time.Minute), at(29*time.Minute)), nil)
		if out, _, err := c2.run(k, login, nil, "echo logged-in"); err == nil || strings.Contains(out, "logged-in") {
			t.Fatalf("after a restart without the CA, a 30-minute break-glass certificate logged in")
		}
		b.logs.find(t, map[string]string{"msg": "agent: certificate refused", "reason": reasonTooLong, "key_id": "case bg after restart"})
	})
}

// TestUnverifiedCertificateLeaksNothing: an attacker offers certificates
// whose key id, principals, extensions and critical options carry a
// marker: one signed by a CA the host does not trust, and one signed by
// the real production key and edited after signing (trusted CA, signature
// broken). Until the signature verifies, nothing the certificate says may
// reach a log line, an audit record or a file of the agent; the refusal is
// logged with fingerprints only.
func TestUnverifiedCertificateLeaksNothing(t *testing.T) {
	catest.NeedOpenSSH(t)
	const marker = "MARKER-7f3a-injected"
	w := startRealCA(t)
	al := &auditLog{}
	a := startRealAgent(t, w, agentOpts{tier: api.TierProduction, cfg: withAudit(al)})
	c := realSSHClient(t, w, a)
	login := currentUser(t)
	now := time.Now()
	evil := ssh.Certificate{Serial: 777, KeyId: marker + " alice@local tier=production\nforged=line",
		ValidPrincipals: []string{login, marker},
		ValidAfter:      uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(5 * time.Minute).Unix()),
		Permissions: ssh.Permissions{
			CriticalOptions: map[string]string{optForceCommand: "echo " + marker},
			Extensions:      map[string]string{extPermitPTY: "", api.ExtTier: marker, api.ExtRequestID: marker},
		}}
	untrusted := catest.NewSigner(t)
	tests := []struct {
		name   string
		k      *userKey
		goSSH  bool // OpenSSH's ssh will not offer a certificate whose signature is broken
		reason string
	}{
		{"untrusted CA", mint(t, c.home, untrusted, evil, nil), false, reasonUntrustedCA},
		{"real production key, edited after signing", mint(t, c.home, w.UserCAs[api.TierProduction], evil,
			func(c *ssh.Certificate) { c.KeyId += " " + marker }), true, reasonBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.goSSH {
				if cl, err := realGoSSHDial(t, w, a, tt.k, login); err == nil {
					cl.Close()
					t.Fatal("logged in")
				}
			} else if out, _, err := c.run(tt.k, login, nil, "echo logged-in"); err == nil || strings.Contains(out, "logged-in") {
				t.Fatalf("logged in: %v %q", err, out)
			}
			// Settled as a refusal once the connection failed, with the
			// fingerprints of the key and the CA that signed it.
			rec := a.logs.find(t, map[string]string{"msg": "agent: certificate refused", "reason": tt.reason})
			wantFP := "key=" + ssh.FingerprintSHA256(tt.k.cert.Key) + " ca=" + ssh.FingerprintSHA256(tt.k.cert.SignatureKey)
			if rec["detail"] != wantFP || rec["key_id"] != "" || rec["serial"] != float64(0) || rec["tier"] != api.TierProduction {
				t.Errorf("refusal record %v: want only fingerprints (%s)", rec, wantFP)
			}
			al.find(t, func(ev AuditEvent) bool { return ev.Reason == tt.reason && ev.Detail == wantFP })
		})
	}
	if err := a.stop(); err != nil && err != ErrServerClosed {
		t.Fatal(err)
	}
	if strings.Contains(a.logs.String(), marker) {
		for _, line := range strings.Split(a.logs.String(), "\n") {
			if strings.Contains(line, marker) {
				t.Errorf("log line carries the unverified certificate's content: %s", line)
			}
		}
	}
	for _, ev := range al.events() {
		if strings.Contains(strings.Join([]string{ev.KeyID, ev.Principal, ev.Tier, ev.Reason, ev.Detail, ev.ClientAddr}, "|"), marker) {
			t.Errorf("audit event carries the unverified certificate's content: %+v", ev)
		}
	}
	if hits := grepTree(t, a.dataDir, marker); len(hits) > 0 {
		t.Errorf("files of the agent carry the unverified certificate's content: %v", hits)
	}
	st, err := ReadStatus(a.dataDir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	if err := st.WriteText(&sb); err != nil || strings.Contains(sb.String(), marker) {
		t.Errorf("status (%v) carries the marker:\n%s", err, sb.String())
	}
}
