package krl

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// FuzzParse feeds arbitrary bytes to Parse. Parse must not panic, and
// whatever it accepts must re-encode to a fixed point: Marshal(Parse(b)) parses
// to the same value and encodes to the same bytes again. Seeds: the encodings
// of the round-trip table and testdata/fuzz/FuzzParse (ssh-keygen output
// with bitmaps and explicit keys, hand-made edge cases).
func FuzzParse(f *testing.F) {
	ca, _ := testKey(f, 1)
	user, _ := testKey(f, 2)
	for _, k := range []*KRL{
		{},
		{Version: 9, Comment: "c", CAs: []CertSection{{CA: ca, Serials: []uint64{1, 2, 3, 9, 1 << 63}, KeyIDs: []string{"a", "b"}}}},
		{CAs: []CertSection{{KeyIDs: []string{"wild"}}, {CA: ca, Ranges: []SerialRange{{5, 1 << 20}}}}, Keys: []ssh.PublicKey{user}},
	} {
		b, err := k.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := Parse(b)
		if err != nil {
			if k != nil {
				t.Fatalf("Parse returned a KRL and %v", err)
			}
			return
		}
		b1, err := k.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed KRL: %v", err)
		}
		k1, err := Parse(b1)
		if err != nil {
			t.Fatalf("Parse(Marshal(Parse(b))): %v", err)
		}
		if !reflect.DeepEqual(viewOf(k), viewOf(k1)) {
			t.Fatalf("round trip changed the KRL:\n%+v\n%+v", viewOf(k), viewOf(k1))
		}
		b2, err := k1.Marshal()
		if err != nil || !bytes.Equal(b1, b2) {
			t.Fatalf("Marshal is not a fixed point (err %v)", err)
		}
	})
}

// FuzzMarshalRoundTrip builds a KRL from fuzzed serials and key IDs, encodes
// and decodes it, and checks that exactly the same serials and key IDs come
// back. Serials are base + 16-bit offsets so that runs, duplicates and
// wrap-around near 2^64 are common. When the seed corpus runs as a normal
// test (not -short, not under -fuzz), OpenSSH also checks the bytes.
func FuzzMarshalRoundTrip(f *testing.F) {
	f.Add(uint64(1000), []byte{0, 1, 0, 2, 0, 3, 0, 9, 1, 0}, "alice\nbob\nalice", false)
	f.Add(uint64(1<<64-4), []byte{0, 0, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5}, "", true)
	f.Add(uint64(0), []byte{0, 0, 0, 7, 0, 8, 0x80, 0}, "eve tier=break-glass req=REQ-1", true)

	runOpenSSH := !testing.Short() && flag.Lookup("test.fuzz").Value.String() == ""
	ca, caSigner := testKey(f, 1)
	f.Fuzz(func(t *testing.T, base uint64, offsets []byte, ids string, anyCA bool) {
		want := make(map[uint64]bool)
		var serials []uint64
		for i := 0; i+1 < len(offsets); i += 2 {
			n := base + uint64(binary.BigEndian.Uint16(offsets[i:]))
			if n == 0 {
				continue // serial 0 cannot be revoked by serial
			}
			serials = append(serials, n)
			want[n] = true
		}
		var keyIDs []string
		wantIDs := make(map[string]bool)
		if ids != "" {
			for _, id := range strings.Split(ids, "\n") {
				if !strings.Contains(id, "\x00") {
					keyIDs = append(keyIDs, id)
					wantIDs[id] = true
				}
			}
		}
		sect := CertSection{Serials: serials, KeyIDs: keyIDs}
		if !anyCA {
			sect.CA = ca
		}
		k := &KRL{Version: base, CAs: []CertSection{sect}}
		b, err := k.Marshal()
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		got, err := Parse(b)
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		if len(got.CAs) != 1 || (got.CAs[0].CA == nil) != anyCA {
			t.Fatalf("CA sections = %+v", viewOf(got))
		}
		g := got.CAs[0]
		gotSerials := make(map[uint64]bool)
		for _, n := range g.Serials {
			gotSerials[n] = true
		}
		for _, r := range g.Ranges {
			// Ranges cover at most the 2^16 distinct inputs, so this is bounded.
			for n := r.First; ; n++ {
				gotSerials[n] = true
				if n == r.Last || len(gotSerials) > len(want) {
					break
				}
			}
		}
		if !reflect.DeepEqual(gotSerials, want) {
			t.Fatalf("serials: got %d, want %d", len(gotSerials), len(want))
		}
		gotIDs := make(map[string]bool)
		for _, id := range g.KeyIDs {
			gotIDs[id] = true
		}
		if len(g.KeyIDs) != len(gotIDs) || !reflect.DeepEqual(gotIDs, wantIDs) {
			t.Fatalf("key IDs: got %q, want %v", g.KeyIDs, wantIDs)
		}

		if runOpenSSH {
			checkWithOpenSSH(t, b, caSigner, serials, keyIDs, want, wantIDs)
		}
	})
}

// checkWithOpenSSH writes the KRL and asks ssh-keygen about one revoked
// serial, one revoked key ID and one serial that must stay valid.
func checkWithOpenSSH(t *testing.T, krlBytes []byte, ca ssh.Signer, serials []uint64, ids []string, want map[uint64]bool, wantIDs map[string]bool) {
	dir := t.TempDir()
	krlPath := filepath.Join(dir, "krl")
	writeFile(t, krlPath, krlBytes)
	user, _ := testKey(t, 9)
	expect := make(map[string]bool)
	if len(serials) > 0 {
		expect[writeCert(t, filepath.Join(dir, "revoked-serial.pub"), ca, user, serials[0], "not-revoked-id")] = true
	}
	if len(ids) > 0 {
		expect[writeCert(t, filepath.Join(dir, "revoked-id.pub"), ca, user, 0, ids[0])] = true
	}
	free := uint64(1)
	for want[free] {
		free++
	}
	if !wantIDs["not-revoked-id"] {
		expect[writeCert(t, filepath.Join(dir, "ok.pub"), ca, user, free, "not-revoked-id")] = false
	}
	var paths []string
	for p := range expect {
		paths = append(paths, p)
	}
	for p, revoked := range keygenRevokedMany(t, krlPath, paths) {
		if revoked != expect[p] {
			t.Errorf("ssh-keygen -Q %s: revoked=%v, want %v", filepath.Base(p), revoked, expect[p])
		}
	}
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(fmt.Errorf("write %s: %w", path, err))
	}
}
