package keys

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func TestRotateAndRetire(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	pass := []byte("rotate-pass")
	now := time.Unix(1_900_000_000, 0)
	first, err := Create(ctx, CreateRequest{Dir: dir, Name: "user-ca-production", Passphrase: pass})
	if err != nil {
		t.Fatal(err)
	}
	firstPub, _ := ssh.NewPublicKey(first.Public())
	ring, err := Rotate(ctx, RotateRequest{Dir: dir, Name: "user-ca-production", Passphrase: pass, Now: now, RetireAt: now.Add(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	newPub, _ := ssh.NewPublicKey(ring.Current.Public())
	if PublicLine(ring.Previous) != PublicLine(firstPub) || PublicLine(newPub) == PublicLine(firstPub) {
		t.Fatal("rotation did not keep the old key as previous and make a new current one")
	}
	for _, f := range []string{"user-ca-production.key", "user-ca-production.prev.key"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v mode %v, want 0600", f, err, fi.Mode())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "user-ca-production.next.key")); !os.IsNotExist(err) {
		t.Fatalf("next key left behind: %v", err)
	}
	loaded, err := LoadRing(ctx, dir, "user-ca-production", pass)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.PreviousTrusted(now.Add(23*time.Hour)) || loaded.PreviousTrusted(now.Add(24*time.Hour)) {
		t.Fatal("the previous key must be trusted inside the overlap only")
	}
	if loaded.Rotation.Previous != ssh.FingerprintSHA256(firstPub) || loaded.Rotation.Current != ssh.FingerprintSHA256(newPub) {
		t.Fatalf("rotation record %+v", loaded.Rotation)
	}
	if _, err := Rotate(ctx, RotateRequest{Dir: dir, Name: "user-ca-production", Passphrase: pass, Now: now, RetireAt: now.Add(time.Hour)}); !errors.Is(err, ErrRotationPending) {
		t.Fatalf("second rotation during the overlap: %v, want ErrRotationPending", err)
	}
	if _, err := Rotate(ctx, RotateRequest{Dir: dir, Name: "user-ca-production", Passphrase: []byte("wrong"), Now: now, RetireAt: now.Add(time.Hour)}); !errors.Is(err, ErrBadPassphrase) {
		t.Fatalf("rotation with a wrong passphrase: %v", err)
	}
	rot, err := Retire(ctx, dir, "user-ca-production")
	if err != nil || rot.Previous != ssh.FingerprintSHA256(firstPub) {
		t.Fatalf("retire: %+v %v", rot, err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".prev") {
			t.Fatalf("%s left after retire", e.Name())
		}
	}
	if _, err := Retire(ctx, dir, "user-ca-production"); !errors.Is(err, ErrNoRotation) {
		t.Fatalf("retire twice: %v", err)
	}
}

// A crash after the new key and the record were written but before the
// renames: the next load finishes the rotation.
func TestRotateRepairsInterrupted(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	pass := []byte("rotate-pass")
	now := time.Unix(1_900_000_000, 0)
	if _, err := Create(ctx, CreateRequest{Dir: dir, Name: "host-ca", Passphrase: pass}); err != nil {
		t.Fatal(err)
	}
	ring, err := Rotate(ctx, RotateRequest{Dir: dir, Name: "host-ca", Passphrase: pass, Now: now, RetireAt: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	// Undo the renames by hand: current back to next, previous back to current.
	for _, ext := range []string{".key", ".pub"} {
		must(t, os.Rename(filepath.Join(dir, "host-ca"+ext), filepath.Join(dir, "host-ca.next"+ext)))
		must(t, os.Rename(filepath.Join(dir, "host-ca.prev"+ext), filepath.Join(dir, "host-ca"+ext)))
	}
	loaded, err := LoadRing(ctx, dir, "host-ca", pass)
	if err != nil {
		t.Fatal(err)
	}
	if PublicLine(loaded.Previous) != PublicLine(ring.Previous) {
		t.Fatal("repair did not restore the previous key")
	}
	got, _ := ssh.NewPublicKey(loaded.Current.Public())
	want, _ := ssh.NewPublicKey(ring.Current.Public())
	if PublicLine(got) != PublicLine(want) {
		t.Fatal("repair did not make the new key current")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestGeneratePEMForSharedStore: a key made for the store CA replicas
// share is the encrypted PEM of a key file: it opens with the passphrase
// into the same public key, is refused with another one, and its bytes
// hold no plaintext private key.
func TestGeneratePEMForSharedStore(t *testing.T) {
	ctx := context.Background()
	k, data, err := GeneratePEM(ctx, []byte("shared-pass-1"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "BEGIN ENCRYPTED PRIVATE KEY") {
		t.Fatalf("not an encrypted PKCS#8 PEM:\n%s", data)
	}
	again, err := OpenPEM(ctx, data, []byte("shared-pass-1"), "shared")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := ssh.NewPublicKey(k.Public())
	b, _ := ssh.NewPublicKey(again.Public())
	if PublicLine(a) != PublicLine(b) {
		t.Fatal("the PEM opens into another key")
	}
	if _, err := OpenPEM(ctx, data, []byte("other-pass-2"), "shared"); !errors.Is(err, ErrBadPassphrase) {
		t.Fatalf("another passphrase: %v", err)
	}
	if _, _, err := GeneratePEM(ctx, nil); !errors.Is(err, ErrNoPassphrase) {
		t.Fatalf("no passphrase: %v", err)
	}
}
