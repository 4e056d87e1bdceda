package ca

import (
	"context"
	"strings"
	"testing"

	"github.com/sshward/sshward/ca/store/storetest"
)

// FuzzSecretBoxOpen: whatever a store file holds in a TOTP secret field,
// opening it neither panics nor yields anything but the sealed secret for
// its owner; a sealed secret round-trips.
func FuzzSecretBoxOpen(f *testing.F) {
	box, err := NewSecretBox(context.Background(), storetest.MustOpen(f), []byte("fuzz passphrase"))
	if err != nil {
		f.Fatal(err)
	}
	sealed, err := box.Seal("JBSWY3DPEHPK3PXP", "alice")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sealed, "alice")
	f.Add(sealed, "bob")
	f.Add("enc1:", "alice")
	f.Add("enc1:!!!", "alice")
	f.Add("JBSWY3DPEHPK3PXP", "alice")
	f.Add(sealed[:len(sealed)-2], "alice")
	f.Fuzz(func(t *testing.T, stored, owner string) {
		plain, err := box.open(stored, owner)
		switch {
		case !strings.HasPrefix(stored, sealedPrefix):
			if err != nil || plain != stored {
				t.Fatalf("a clear secret did not pass through: %q %v", plain, err)
			}
		case stored == sealed && owner == "alice":
			if err != nil || plain != "JBSWY3DPEHPK3PXP" {
				t.Fatalf("round trip: %q %v", plain, err)
			}
		case err == nil && stored != sealed:
			// Only an authentic ciphertext opens (GCM): a fuzzer cannot forge one.
			t.Fatalf("a forged sealed secret opened: %q → %q", stored, plain)
		case stored == sealed && owner != "alice" && err == nil:
			t.Fatalf("alice's secret opened for %q", owner)
		}
		if err != nil && strings.Contains(err.Error(), "JBSWY3DPEHPK3PXP") {
			t.Fatal("the error shows the secret")
		}
		s2, err := box.Seal(owner, owner)
		if err != nil {
			t.Fatal(err)
		}
		if back, err := box.open(s2, owner); err != nil || back != owner {
			t.Fatalf("seal/open %q: %q %v", owner, back, err)
		}
	})
}
