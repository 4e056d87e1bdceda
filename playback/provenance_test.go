package playback_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/ca/hostauth"
	"github.com/sshward/sshward/playback"
	"github.com/sshward/sshward/recorder"
)

// tierHost is a host certificate as sshward's join issues it: the host
// names as principals and its tier in tier@sshward.
func tierHost(t *testing.T, w *world, name, tier string) *host {
	t.Helper()
	h := newHost(t, name, w.ca.HostCA, ssh.HostCert)
	h.cert.KeyId = "host " + name + " tier=" + tier + " serial=1"
	h.cert.Extensions = map[string]string{api.ExtTier: tier}
	if err := h.cert.SignCert(rand.Reader, w.ca.HostCA); err != nil {
		t.Fatal(err)
	}
	return h
}

// userCertFor signs a user certificate with the given CA key.
func userCertFor(t *testing.T, caKey ssh.Signer, keyID string, serial uint64, principal string, ext map[string]string) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ssh.NewPublicKey(pub)
	now := time.Now()
	cert := &ssh.Certificate{Key: key, Serial: serial, CertType: ssh.UserCert, KeyId: keyID, ValidPrincipals: []string{principal},
		ValidAfter: uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(10 * time.Minute).Unix()),
		Permissions: ssh.Permissions{Extensions: ext}}
	if err := cert.SignCert(rand.Reader, caKey); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(cert)))
}

// TestProvenanceRefusals is a joined host lying about a recording: another
// host, another tier, another person, an access request it never saw. Each
// start is refused with the reason, audited, and nothing is stored.
func TestProvenanceRefusals(t *testing.T) {
	w := newWorld(t)
	srv := w.startServer(t, serverOpts{})
	staging := tierHost(t, w, "web1.staging", "staging")
	prod := tierHost(t, w, "db1.prod", "production")
	bgExt := map[string]string{api.ExtTier: "break-glass", api.ExtRequestID: "REQ-1", api.ExtReason: "INC-1", api.ExtApprovers: "ivan,irene"}
	start := time.Now()
	base := func(h *host, tier string) recorder.Metadata {
		return recorder.Metadata{Identity: "alice@local", Principal: "root", KeyID: "alice@local tier=" + tier + " req=- serial=9",
			Serial: 9, Tier: tier, Host: h.cert.ValidPrincipals[0], Kind: recorder.KindShell, Start: start,
			UserCert: userCertFor(t, w.ca.UserCAs[tier], "alice@local tier="+tier+" req=- serial=9", 9, "root", map[string]string{api.ExtTier: tier})}
	}
	tests := []struct {
		name  string
		h     *host
		meta  func() recorder.Metadata
		want  string // "" = admitted
		check string
	}{
		{name: "honest staging", h: staging, meta: func() recorder.Metadata { return base(staging, "staging") }},
		{name: "break-glass on a production host", h: prod, meta: func() recorder.Metadata {
			m := base(prod, "break-glass")
			m.RequestID, m.Reason, m.Approvers = "REQ-1", "INC-1", []string{"ivan", "irene"}
			m.UserCert = userCertFor(t, w.ca.UserCAs["break-glass"], m.KeyID, 9, "root", bgExt)
			return m
		}},
		{name: "production certificate with critical options", h: prod, meta: func() recorder.Metadata {
			m := base(prod, "production")
			m.UserCert = userCertFor(t, w.ca.UserCAs["production"], m.KeyID, 9, "root", map[string]string{api.ExtTier: "production"})
			pub, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(m.UserCert))
			c := pub.(*ssh.Certificate)
			c.CriticalOptions = map[string]string{"source-address": "127.0.0.1/32", "force-command": "true"}
			if err := c.SignCert(rand.Reader, w.ca.UserCAs["production"]); err != nil {
				t.Fatal(err)
			}
			m.UserCert = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(c)))
			return m
		}},
		{name: "another host", h: staging, check: "host", want: "claims host db1.prod", meta: func() recorder.Metadata {
			m := base(staging, "staging")
			m.Host = "db1.prod"
			return m
		}},
		{name: "another tier", h: staging, check: "tier", want: "claims tier break-glass", meta: func() recorder.Metadata {
			m := base(staging, "break-glass")
			m.UserCert = userCertFor(t, w.ca.UserCAs["break-glass"], m.KeyID, 9, "root", map[string]string{api.ExtTier: "break-glass"})
			return m
		}},
		{name: "another person", h: prod, check: "user_cert", want: "identity \"mallory\"", meta: func() recorder.Metadata {
			m := base(prod, "production")
			m.Identity = "mallory"
			return m
		}},
		{name: "another serial", h: prod, check: "user_cert", want: "serial 10", meta: func() recorder.Metadata {
			m := base(prod, "production")
			m.Serial = 10
			return m
		}},
		{name: "a request and approvers the certificate does not carry", h: prod, check: "user_cert", want: "request \"REQ-1\"", meta: func() recorder.Metadata {
			m := base(prod, "break-glass")
			m.RequestID, m.Reason, m.Approvers = "REQ-1", "INC-1", []string{"ivan", "irene"}
			m.UserCert = userCertFor(t, w.ca.UserCAs["break-glass"], m.KeyID, 9, "root", map[string]string{api.ExtTier: "break-glass"})
			return m
		}},
		{name: "forged approvers", h: prod, check: "user_cert", want: "approvers", meta: func() recorder.Metadata {
			m := base(prod, "break-glass")
			m.RequestID, m.Reason, m.Approvers = "REQ-1", "INC-1", []string{"mallory", "irene"}
			m.UserCert = userCertFor(t, w.ca.UserCAs["break-glass"], m.KeyID, 9, "root", bgExt)
			return m
		}},
		{name: "a request without a certificate", h: prod, check: "user_cert", want: "without the certificate", meta: func() recorder.Metadata {
			m := base(prod, "break-glass")
			m.RequestID, m.Approvers, m.UserCert = "REQ-1", []string{"ivan", "irene"}, ""
			return m
		}},
		{name: "user certificate from another tier's key", h: prod, check: "user_cert", want: "not signed by the production user CA", meta: func() recorder.Metadata {
			m := base(prod, "production")
			m.UserCert = userCertFor(t, w.ca.UserCAs["staging"], m.KeyID, 9, "root", nil)
			return m
		}},
		{name: "user certificate for another principal", h: prod, check: "user_cert", want: "principal root", meta: func() recorder.Metadata {
			m := base(prod, "production")
			m.UserCert = userCertFor(t, w.ca.UserCAs["production"], m.KeyID, 9, "deploy", nil)
			return m
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := "s-prov-" + string(rune('a'+i))
			m := tt.meta()
			m.SessionID = id
			body, _ := json.Marshal(m)
			req, _ := http.NewRequest(http.MethodPost, srv.url+recorder.IngestPathPrefix+id+"/"+recorder.IngestStart, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			if err := hostauth.Sign(req, body, tt.h.cert, tt.h.signer, time.Now(), rand.Reader); err != nil {
				t.Fatal(err)
			}
			resp, err := w.httpClient(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			b.ReadFrom(resp.Body)
			resp.Body.Close()
			if tt.want == "" {
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("honest upload refused: %d %s", resp.StatusCode, b.String())
				}
				return
			}
			var e api.Error
			json.Unmarshal(b.Bytes(), &e)
			if resp.StatusCode != http.StatusForbidden || e.Code != playback.CodeProvenance || !strings.Contains(e.Message, tt.check+": ") || !strings.Contains(e.Message, tt.want) {
				t.Fatalf("got %d %s, want 403 %s naming %s: %q", resp.StatusCode, b.String(), playback.CodeProvenance, tt.check, tt.want)
			}
			if code, _ := w.get(t, srv.url+"/api/sessions/"+id, w.auditor); code != http.StatusNotFound {
				t.Errorf("a refused recording is stored: GET answered %d", code)
			}
			var audit struct {
				Events []struct{ Type, Subject, Outcome, Reason string } `json:"events"`
			}
			w.getJSON(t, srv.url+"/api/audit", w.auditor, &audit)
			found := false
			for _, ev := range audit.Events {
				if ev.Type == "recording.start" && ev.Subject == id && ev.Outcome == "refused" && strings.Contains(ev.Reason, tt.want) {
					found = true
				}
			}
			if !found {
				t.Errorf("no refused recording.start audit event for %s", id)
			}
		})
	}
}
