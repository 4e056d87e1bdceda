package keys

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
)

// Each key encryption or decryption runs 600,000 PBKDF2 rounds (~0.1 s, ~1.2 s
// under -race), so tests share one key where they do not test Create itself.
var (
	fixtureOnce sync.Once
	fixtureDir  string
	fixtureKey  *Key
	fixtureErr  error
)

const fixturePass = "correct horse battery staple"

func TestMain(m *testing.M) {
	code := m.Run()
	if fixtureDir != "" {
		os.RemoveAll(fixtureDir)
	}
	os.Exit(code)
}

// fixture returns a shared ed25519 key created with Create.
func fixture(tb testing.TB) *Key {
	tb.Helper()
	fixtureOnce.Do(func() {
		fixtureDir, fixtureErr = os.MkdirTemp("", "keys-fixture-")
		if fixtureErr != nil {
			return
		}
		fixtureKey, fixtureErr = Create(context.Background(), CreateRequest{
			Dir: fixtureDir, Name: "ca", Passphrase: []byte(fixturePass), Comment: "fixture",
		})
	})
	if fixtureErr != nil {
		tb.Fatalf("fixture key: %v", fixtureErr)
	}
	return fixtureKey
}

func TestCreateOpen(t *testing.T) {
	tests := []struct {
		name    string
		typ     KeyType
		x509    bool
		comment string
		open    func(dir string) string // the string handed to Open
	}{
		{name: "ed25519 by softkms uri", typ: Ed25519, comment: "user-ca staging",
			open: func(dir string) string { return "softkms:path=" + filepath.Join(dir, "k.key") }},
		{name: "ecdsa x509 by plain path", typ: ECDSAP256, x509: true,
			open: func(dir string) string { return filepath.Join(dir, "k.key") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			// A directory Create has to make, to check it is private.
			dir := filepath.Join(t.TempDir(), "ca")
			pass := []byte("s3cret-" + tt.name)
			k, err := Create(ctx, CreateRequest{Dir: dir, Name: "k", Type: tt.typ, Passphrase: pass, Comment: tt.comment, X509: tt.x509})
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			keyPath := filepath.Join(dir, "k.key")
			if want := "softkms:path=" + keyPath; k.URI() != want {
				t.Errorf("URI = %q, want %q", k.URI(), want)
			}
			assertMode(t, dir, 0o700)
			assertMode(t, keyPath, 0o600)

			// The file is an encrypted PKCS#8 block and holds no plaintext key.
			data, err := os.ReadFile(keyPath)
			if err != nil {
				t.Fatal(err)
			}
			block, _ := pem.Decode(data)
			if block == nil || block.Type != "ENCRYPTED PRIVATE KEY" {
				t.Fatalf("key file is not an encrypted PKCS#8 PEM:\n%s", data)
			}
			if bytes.Contains(data, pass) || bytes.Contains(data, privateBytes(t, k.Signer())) {
				t.Fatal("key file contains the passphrase or the raw private key")
			}

			pubPath := filepath.Join(dir, "k.pub")
			if tt.x509 {
				if _, err := os.Stat(pubPath); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("X509 key wrote %s (err %v)", pubPath, err)
				}
			} else {
				assertMode(t, pubPath, 0o644)
				line, err := os.ReadFile(pubPath)
				if err != nil {
					t.Fatal(err)
				}
				pub, comment, _, _, err := ssh.ParseAuthorizedKey(line)
				if err != nil {
					t.Fatalf("parse %s: %v", pubPath, err)
				}
				if comment != tt.comment {
					t.Errorf(".pub comment = %q, want %q", comment, tt.comment)
				}
				want, _ := ssh.NewPublicKey(k.Public())
				if !bytes.Equal(pub.Marshal(), want.Marshal()) {
					t.Error(".pub does not hold the key's public key")
				}
			}

			opened, err := Open(ctx, tt.open(dir), pass)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if opened.URI() != k.URI() {
				t.Errorf("opened URI = %q, want %q", opened.URI(), k.URI())
			}
			if !publicEqual(opened.Public(), k.Public()) {
				t.Fatal("opened key has a different public key")
			}
			// The opened key signs what the created key's public half verifies.
			signer, err := opened.SSHSigner()
			if err != nil {
				t.Fatal(err)
			}
			msg := []byte("sign me")
			sig, err := signer.Sign(rand.Reader, msg)
			if err != nil {
				t.Fatal(err)
			}
			created, _ := k.SSHSigner()
			if err := created.PublicKey().Verify(msg, sig); err != nil {
				t.Fatalf("signature from opened key does not verify: %v", err)
			}
			// And the crypto.Signer (the X.509 path) signs for its public key.
			switch pub := opened.Public().(type) {
			case ed25519.PublicKey:
				sig, err := opened.Signer().Sign(rand.Reader, msg, crypto.Hash(0))
				if err != nil || !ed25519.Verify(pub, msg, sig) {
					t.Fatalf("ed25519 crypto.Signer: err %v or bad signature", err)
				}
			case *ecdsa.PublicKey:
				digest := sha256.Sum256(msg)
				sig, err := opened.Signer().Sign(rand.Reader, digest[:], crypto.SHA256)
				if err != nil || !ecdsa.VerifyASN1(pub, digest[:], sig) {
					t.Fatalf("ecdsa crypto.Signer: err %v or bad signature", err)
				}
			default:
				t.Fatalf("public key type %T", pub)
			}
		})
	}
}

func TestOpenWrongPassphrase(t *testing.T) {
	k := fixture(t)
	wrong := "Tr0ub4dor&3-not-it"
	_, err := Open(context.Background(), k.URI(), []byte(wrong))
	if !errors.Is(err, ErrBadPassphrase) {
		t.Fatalf("err = %v, want ErrBadPassphrase", err)
	}
	if strings.Contains(err.Error(), wrong) || strings.Contains(err.Error(), fixturePass) {
		t.Fatalf("error echoes a passphrase: %v", err)
	}
}

func TestCreateRefusesOverwrite(t *testing.T) {
	tests := []struct {
		name     string
		existing string // file present before Create
		x509     bool
	}{
		{name: "key exists", existing: "k.key"},
		{name: "pub exists", existing: "k.pub"},
		{name: "pub exists, x509 key", existing: "k.pub", x509: true},
		{name: "symlink in place of key", existing: "k.key -> elsewhere"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			name, target, isLink := strings.Cut(tt.existing, " -> ")
			path := filepath.Join(dir, name)
			if isLink {
				if err := os.Symlink(filepath.Join(dir, target), path); err != nil {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(path, []byte("precious\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Create(context.Background(), CreateRequest{Dir: dir, Name: "k", Passphrase: []byte("pw"), X509: tt.x509})
			if !errors.Is(err, ErrExists) {
				t.Fatalf("err = %v, want ErrExists", err)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				t.Errorf("Create left %d files, want only the existing one", len(entries))
			}
			if !isLink {
				if got, _ := os.ReadFile(path); string(got) != "precious\n" {
					t.Errorf("existing file changed to %q", got)
				}
			}
		})
	}
}

func TestCreateRequestCheck(t *testing.T) {
	ok := CreateRequest{Dir: "d", Name: "n", Passphrase: []byte("p")}
	tests := []struct {
		name   string
		mutate func(*CreateRequest)
		want   string // substring of the error
	}{
		{"no dir", func(r *CreateRequest) { r.Dir = "" }, "Dir"},
		{"no name", func(r *CreateRequest) { r.Name = "" }, "Name"},
		{"name with slash", func(r *CreateRequest) { r.Name = "../x" }, "Name"},
		{"dotdot", func(r *CreateRequest) { r.Name = ".." }, "Name"},
		{"no passphrase", func(r *CreateRequest) { r.Passphrase = nil }, "Passphrase"},
		{"two-line comment", func(r *CreateRequest) { r.Comment = "a\nb" }, "Comment"},
		{"bad type", func(r *CreateRequest) { r.Type = 7 }, "key type"},
	}
	if err := ok.Check(); err != nil {
		t.Fatalf("valid request: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ok
			tt.mutate(&r)
			err := r.Check()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Check() = %v, want error naming %q", err, tt.want)
			}
			if _, err := Create(context.Background(), r); err == nil {
				t.Fatal("Create accepted an invalid request")
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte, perm os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, perm); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, perm); err != nil {
			t.Fatal(err)
		}
		return p
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	plain, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	plainPath := write("plain.key", pem.EncodeToMemory(plain), 0o600)
	// An encrypted key made readable by the group.
	src, err := os.ReadFile(filepath.Join(fixtureDirOf(t), "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	openPath := write("group.key", src, 0o640)
	garbagePath := write("garbage.key", []byte("not a key\n"), 0o600)
	twoBlocks := write("two.key", append(append([]byte{}, src...), src...), 0o600)

	tests := []struct {
		name    string
		uri     string
		pass    string
		want    error  // errors.Is target, nil when only text is checked
		text    string // substring the error must contain
		notText string // substring it must not contain
	}{
		{name: "pkcs11 names scheme, hides pin", uri: "pkcs11:token=ca;object=user?pin-value=123456", pass: "x",
			want: ErrUnsupportedKMS, text: `"pkcs11"`, notText: "123456"},
		{name: "yubikey", uri: "yubikey:slot-id=9c", pass: "x", want: ErrUnsupportedKMS, text: `"yubikey"`},
		{name: "cloud kms upper case", uri: "AWSKMS:key-id=abc", pass: "x", want: ErrUnsupportedKMS, text: `"awskms"`},
		{name: "missing file", uri: filepath.Join(dir, "nope.key"), pass: "x", want: os.ErrNotExist},
		{name: "empty passphrase", uri: openPath, pass: "", want: ErrNoPassphrase},
		{name: "group-readable", uri: openPath, pass: fixturePass, want: ErrInsecureFile, text: "chmod 600"},
		{name: "plaintext key refused", uri: plainPath, pass: "x", want: ErrNotEncrypted},
		{name: "garbage", uri: garbagePath, pass: "x", text: "PEM"},
		{name: "two blocks", uri: twoBlocks, pass: "x", text: "single PEM block"},
		{name: "softkms without path", uri: "softkms:foo=bar", pass: "x", text: "no path"},
		{name: "empty uri", uri: "", pass: "x", text: "empty"},
	}
	for _, tt := range tests {
		if pkcs11Built && strings.HasPrefix(tt.uri, "pkcs11:") {
			// With the driver built in, the module fails to open instead;
			// the URI is still named and the PIN still hidden.
			tt.want, tt.text = nil, "pkcs11:token=ca"
		}
		t.Run(tt.name, func(t *testing.T) {
			_, err := Open(context.Background(), tt.uri, []byte(tt.pass))
			if err == nil {
				t.Fatal("Open succeeded")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.text) {
				t.Errorf("err = %q, want it to contain %q", err, tt.text)
			}
			if tt.notText != "" && strings.Contains(err.Error(), tt.notText) {
				t.Errorf("err = %q leaks %q", err, tt.notText)
			}
			if !strings.HasPrefix(err.Error(), "keys: ") {
				t.Errorf("err = %q lacks the package prefix", err)
			}
		})
	}

	t.Run("cancelled context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := Open(ctx, openPath, []byte("x")); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if _, err := Create(ctx, CreateRequest{Dir: dir, Name: "c", Passphrase: []byte("x")}); !errors.Is(err, context.Canceled) {
			t.Fatalf("Create err = %v, want context.Canceled", err)
		}
	})
}

func fixtureDirOf(t *testing.T) string {
	fixture(t)
	return fixtureDir
}

func TestKeyNeverPrintsPrivateBytes(t *testing.T) {
	k := fixture(t)
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("loaded", "key", k)
	outs := map[string]string{
		"%v":     fmt.Sprintf("%v", k),
		"%+v":    fmt.Sprintf("%+v", k),
		"%#v":    fmt.Sprintf("%#v", k),
		"String": k.String(),
		"slog":   logged.String(),
	}
	seed := k.Signer().(ed25519.PrivateKey).Seed()
	for verb, out := range outs {
		if !strings.Contains(out, k.URI()) {
			t.Errorf("%s: %q does not show the URI", verb, out)
		}
		if strings.Contains(out, fmt.Sprint(seed[:4])) || strings.Contains(out, fmt.Sprintf("%x", seed[:4])) || strings.Contains(out, fmt.Sprintf("%d %d", seed[0], seed[1])) {
			t.Errorf("%s: %q shows private key bytes", verb, out)
		}
	}
}

func TestParseURI(t *testing.T) {
	tests := []struct {
		in, scheme, path string
		err              bool
	}{
		{in: "/srv/ca/k.key", scheme: "softkms", path: "/srv/ca/k.key"},
		{in: "k.key", scheme: "softkms", path: "k.key"},
		{in: "./a:b/k.key", scheme: "softkms", path: "./a:b/k.key"},
		{in: "softkms:path=/srv/ca/k.key", scheme: "softkms", path: "/srv/ca/k.key"},
		{in: "SoftKMS:path=/srv/ca/k.key", scheme: "softkms", path: "/srv/ca/k.key"},
		{in: "softkms:/srv/ca/k.key", scheme: "softkms", path: "/srv/ca/k.key"},
		{in: "softkms:path=/srv/my%20ca/k%2Bx.key", scheme: "softkms", path: "/srv/my ca/k+x.key"},
		{in: "pkcs11:token=x", scheme: "pkcs11"},
		{in: "softkms:", err: true},
		{in: "", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			scheme, path, err := parseURI(tt.in)
			if (err != nil) != tt.err {
				t.Fatalf("err = %v, want error %v", err, tt.err)
			}
			if scheme != tt.scheme || path != tt.path {
				t.Fatalf("parseURI(%q) = %q, %q; want %q, %q", tt.in, scheme, path, tt.scheme, tt.path)
			}
		})
	}
}

// FuzzParseURI: parseURI never panics, and the URI of any absolute key path
// parses back to that path.
func FuzzParseURI(f *testing.F) {
	for _, s := range []string{"/srv/ca/k.key", "/a b/+;?#%/k.key", "/x/path=y;z=1", "/ä/ü.key"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, _, _ = parseURI(s)
		p := filepath.Clean("/" + s)
		if strings.ContainsRune(p, 0) {
			return
		}
		scheme, got, err := parseURI(softURI(p))
		if err != nil || scheme != "softkms" || got != p {
			t.Fatalf("softURI(%q) = %q parses to %q, %q, %v", p, softURI(p), scheme, got, err)
		}
	})
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s mode = %#o, want %#o", path, got, want)
	}
}

func publicEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

func privateBytes(t *testing.T, s crypto.Signer) []byte {
	switch k := s.(type) {
	case ed25519.PrivateKey:
		return k.Seed()
	case *ecdsa.PrivateKey:
		b, err := k.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	t.Fatalf("unexpected key type %T", s)
	return nil
}
