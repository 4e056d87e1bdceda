package agent

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
)

// TestCiphersConfig: Check refuses a cipher x/crypto/ssh does not have;
// the defaults drop chacha20-poly1305 only where AES runs in hardware.
func TestCiphersConfig(t *testing.T) {
	for _, tt := range []struct {
		name    string
		ciphers []string
		wantErr string
	}{
		{"default", nil, ""},
		{"aes-gcm only", []string{ssh.CipherAES128GCM, ssh.CipherAES256GCM}, ""},
		{"unknown", []string{ssh.CipherAES128GCM, "rot13-poly1305"}, `cipher "rot13-poly1305"`},
		{"insecure", []string{ssh.InsecureCipherRC4}, `cipher "arcfour"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Tier: api.TierStaging, DataDir: t.TempDir(), CA: newFakeCA(t), Ciphers: tt.ciphers}
			err := cfg.Check()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Check() = %v, want %q", err, tt.wantErr)
			}
		})
	}
	def := DefaultCiphers()
	if hasChaCha := slices.Contains(def, ssh.CipherChaCha20Poly1305); hasChaCha == hardwareAESGCM() {
		t.Errorf("DefaultCiphers() = %v with AES hardware %v", def, hardwareAESGCM())
	}
	for _, c := range []string{ssh.CipherAES128GCM, ssh.CipherAES128CTR} {
		if !slices.Contains(def, c) {
			t.Errorf("DefaultCiphers() = %v, lacks %s", def, c)
		}
	}
}

// TestNegotiatedCipher: OpenSSH's ssh, with its own default cipher list,
// gets aes128-ctr from a default agent on AES hardware (chacha20-poly1305
// elsewhere), and chacha20-poly1305 when Config.Ciphers offers it; a
// client that insists on chacha20-poly1305 is refused by a default agent
// on AES hardware.
func TestNegotiatedCipher(t *testing.T) {
	cipherLine := regexp.MustCompile(`kex: server->client cipher: (\S+)`)
	defaultWant, insistWant := ssh.CipherChaCha20Poly1305, ssh.CipherChaCha20Poly1305
	if hardwareAESGCM() {
		defaultWant, insistWant = ssh.CipherAES128CTR, ""
	}
	for _, tt := range []struct {
		name    string
		ciphers []string // agent's Config.Ciphers
		client  []string // extra ssh options
		want    string   // negotiated cipher; "" for a refused connection
	}{
		{"default", nil, nil, defaultWant},
		{"chacha20 offered", []string{ssh.CipherChaCha20Poly1305, ssh.CipherAES128GCM}, nil, ssh.CipherChaCha20Poly1305},
		{"aes-gcm only", []string{ssh.CipherAES128GCM, ssh.CipherAES256GCM}, nil, ssh.CipherAES128GCM},
		{"client insists on chacha20", nil, []string{"-c", ssh.CipherChaCha20Poly1305}, insistWant},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ca := newFakeCA(t)
			a := startAgent(t, ca, agentOpts{cfg: func(c *Config) { c.Ciphers = tt.ciphers }})
			c := newSSHClient(t, ca, a)
			login := currentUser(t)
			k := ca.issue(t, c.home, certSpec{keyID: "case cipher", principals: []string{login}, extensions: stagingExt()})
			out, errOut, err := c.run(k, login, append([]string{"-v"}, tt.client...), "echo ok")
			if tt.want == "" {
				if err == nil || !strings.Contains(errOut, "no matching cipher") {
					t.Fatalf("ssh: %v, stderr %q; want no matching cipher", err, errOut)
				}
				return
			}
			if err != nil || out != "ok\n" {
				t.Fatalf("ssh: %v %q %q", err, out, errOut)
			}
			m := cipherLine.FindStringSubmatch(errOut)
			if m == nil || m[1] != tt.want {
				t.Fatalf("negotiated %v, want %s", m, tt.want)
			}
		})
	}
}
