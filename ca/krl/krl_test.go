package krl

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// testKey returns a deterministic ed25519 key pair, distinct per seed.
func testKey(t testing.TB, seed byte) (ssh.PublicKey, ssh.Signer) {
	t.Helper()
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return signer.PublicKey(), signer
}

// testCert signs a user certificate for the key of seed userSeed.
func testCert(t testing.TB, ca ssh.Signer, userSeed byte, serial uint64, keyID string) *ssh.Certificate {
	t.Helper()
	pub, _ := testKey(t, userSeed)
	cert := &ssh.Certificate{
		Key:             pub,
		Serial:          serial,
		CertType:        ssh.UserCert,
		KeyId:           keyID,
		ValidPrincipals: []string{"alice"},
		ValidAfter:      uint64(time.Now().Add(-time.Minute).Unix()),
		ValidBefore:     uint64(time.Now().Add(time.Hour).Unix()),
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	return cert
}

// view is a comparable rendering of a KRL: keys become wire blobs.
type view struct {
	Version uint64
	Date    time.Time
	Comment string
	CAs     []viewCA
	Keys    [][]byte
	Hashes  [][sha256.Size]byte
}

type viewCA struct {
	CA      []byte
	Serials []uint64
	Ranges  []SerialRange
	KeyIDs  []string
}

func viewOf(k *KRL) view {
	v := view{Version: k.Version, Date: k.GeneratedAt, Comment: k.Comment, Hashes: k.KeySHA256}
	for _, s := range k.CAs {
		c := viewCA{Serials: s.Serials, Ranges: s.Ranges, KeyIDs: s.KeyIDs}
		if s.CA != nil {
			c.CA = s.CA.Marshal()
		}
		v.CAs = append(v.CAs, c)
	}
	for _, key := range k.Keys {
		v.Keys = append(v.Keys, key.Marshal())
	}
	return v
}

func hashOf(k ssh.PublicKey) [sha256.Size]byte { return sha256.Sum256(k.Marshal()) }

func TestMarshalParseRoundTrip(t *testing.T) {
	ca1, _ := testKey(t, 1)
	ca2, _ := testKey(t, 2)
	k3, _ := testKey(t, 3)
	k4, _ := testKey(t, 4)
	date := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	h3, h4 := hashOf(k3), hashOf(k4)
	// Ascending order of the two hashes, as Parse must report them.
	lo, hi := h3, h4
	if bytes.Compare(lo[:], hi[:]) > 0 {
		lo, hi = hi, lo
	}

	tests := []struct {
		name string
		in   KRL
		want KRL
	}{
		{name: "empty", in: KRL{}, want: KRL{}},
		{
			name: "header",
			in:   KRL{Version: 7, GeneratedAt: date.In(time.FixedZone("X", 3600)), Comment: "sshward production ✓"},
			want: KRL{Version: 7, GeneratedAt: date, Comment: "sshward production ✓"},
		},
		{
			name: "serial list sorted and deduplicated",
			in:   KRL{CAs: []CertSection{{CA: ca1, Serials: []uint64{90, 7, 1 << 40, 7, 12}}}},
			want: KRL{CAs: []CertSection{{CA: ca1, Serials: []uint64{7, 12, 90, 1 << 40}}}},
		},
		{
			name: "consecutive serials become ranges",
			in:   KRL{CAs: []CertSection{{CA: ca1, Serials: []uint64{5, 3, 4, 20, 10, 11}}}},
			want: KRL{CAs: []CertSection{{CA: ca1, Serials: []uint64{20}, Ranges: []SerialRange{{3, 5}, {10, 11}}}}},
		},
		{
			name: "overlapping and adjacent ranges merge with serials",
			in: KRL{CAs: []CertSection{{CA: ca1, Serials: []uint64{31, 9, 50},
				Ranges: []SerialRange{{10, 20}, {21, 30}, {15, 25}, {50, 50}}}}},
			want: KRL{CAs: []CertSection{{CA: ca1, Serials: []uint64{50}, Ranges: []SerialRange{{9, 31}}}}},
		},
		{
			name: "serials at the top of the range",
			in: KRL{CAs: []CertSection{{CA: ca1, Serials: []uint64{math.MaxUint64, math.MaxUint64 - 1, 1},
				Ranges: []SerialRange{{math.MaxUint64 - 5, math.MaxUint64 - 3}}}}},
			want: KRL{CAs: []CertSection{{CA: ca1, Serials: []uint64{1},
				Ranges: []SerialRange{{math.MaxUint64 - 5, math.MaxUint64 - 3}, {math.MaxUint64 - 1, math.MaxUint64}}}}},
		},
		{
			name: "key IDs sorted bytewise and deduplicated",
			in:   KRL{CAs: []CertSection{{CA: ca1, KeyIDs: []string{"bob", "alice@local tier=production req=- serial=9", "", "bob", "Zoë"}}}},
			want: KRL{CAs: []CertSection{{CA: ca1, KeyIDs: []string{"", "Zoë", "alice@local tier=production req=- serial=9", "bob"}}}},
		},
		{
			name: "any CA",
			in:   KRL{CAs: []CertSection{{KeyIDs: []string{"eve"}, Serials: []uint64{4}}}},
			want: KRL{CAs: []CertSection{{KeyIDs: []string{"eve"}, Serials: []uint64{4}}}},
		},
		{
			name: "several CAs keep first-seen order and merge repeats",
			in: KRL{CAs: []CertSection{
				{CA: ca2, Serials: []uint64{100}},
				{KeyIDs: []string{"w"}},
				{CA: ca1, Serials: []uint64{100}},
				{CA: ca2, Serials: []uint64{101}, KeyIDs: []string{"x"}},
				{KeyIDs: []string{"v"}},
			}},
			want: KRL{CAs: []CertSection{
				{CA: ca2, Ranges: []SerialRange{{100, 101}}, KeyIDs: []string{"x"}},
				{KeyIDs: []string{"v", "w"}},
				{CA: ca1, Serials: []uint64{100}},
			}},
		},
		{
			name: "CA section with nothing revoked survives",
			in:   KRL{CAs: []CertSection{{CA: ca1}}},
			want: KRL{CAs: []CertSection{{CA: ca1}}},
		},
		{
			name: "plain keys become sorted SHA256 fingerprints",
			in:   KRL{Keys: []ssh.PublicKey{k4, k3}, KeySHA256: [][sha256.Size]byte{h3}},
			want: KRL{KeySHA256: [][sha256.Size]byte{lo, hi}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.in.Marshal()
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			got, err := Parse(b)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if g, w := viewOf(got), viewOf(&tt.want); !reflect.DeepEqual(g, w) {
				t.Fatalf("Parse(Marshal(in)) =\n%+v\nwant\n%+v", g, w)
			}
			// The canonical form encodes to the same bytes.
			b2, err := got.Marshal()
			if err != nil {
				t.Fatalf("re-Marshal: %v", err)
			}
			if !bytes.Equal(b, b2) {
				t.Fatalf("Marshal(Parse(b)) differs from b")
			}
		})
	}
}

func TestMarshalDoesNotModifyInput(t *testing.T) {
	ca, _ := testKey(t, 1)
	serials := []uint64{9, 3, 3, 1}
	ids := []string{"b", "a", "b"}
	k := &KRL{CAs: []CertSection{{CA: ca, Serials: serials, KeyIDs: ids}}}
	if _, err := k.Marshal(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(serials, []uint64{9, 3, 3, 1}) || !reflect.DeepEqual(ids, []string{"b", "a", "b"}) {
		t.Fatalf("Marshal reordered the caller's slices: %v %v", serials, ids)
	}
}

func TestMarshalHeaderBytes(t *testing.T) {
	// Layout from PROTOCOL.krl section 1, written out by hand.
	k := &KRL{Version: 0x0102030405060708, GeneratedAt: time.Unix(0x6b012ce2, 0), Comment: "hi"}
	got, err := k.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("SSHKRL\n\x00" +
		"\x00\x00\x00\x01" + // format version
		"\x01\x02\x03\x04\x05\x06\x07\x08" + // krl_version
		"\x00\x00\x00\x00\x6b\x01\x2c\xe2" + // generated_date
		"\x00\x00\x00\x00\x00\x00\x00\x00" + // flags
		"\x00\x00\x00\x00" + // reserved
		"\x00\x00\x00\x02hi") // comment
	if !bytes.Equal(got, want) {
		t.Fatalf("header:\n got %q\nwant %q", got, want)
	}
}

func TestMarshalInvalid(t *testing.T) {
	ca, caSigner := testKey(t, 1)
	cert := testCert(t, caSigner, 2, 5, "x")
	tests := []struct {
		name string
		k    KRL
	}{
		{"serial 0", KRL{CAs: []CertSection{{CA: ca, Serials: []uint64{3, 0}}}}},
		{"range from 0", KRL{CAs: []CertSection{{CA: ca, Ranges: []SerialRange{{0, 4}}}}}},
		{"range reversed", KRL{CAs: []CertSection{{CA: ca, Ranges: []SerialRange{{9, 4}}}}}},
		{"NUL in key ID", KRL{CAs: []CertSection{{CA: ca, KeyIDs: []string{"a\x00b"}}}}},
		{"NUL in comment", KRL{Comment: "a\x00"}},
		{"certificate as CA", KRL{CAs: []CertSection{{CA: cert, Serials: []uint64{1}}}}},
		{"certificate as plain key", KRL{Keys: []ssh.PublicKey{cert}}},
		{"nil plain key", KRL{Keys: []ssh.PublicKey{nil}}},
		{"date before 1970", KRL{GeneratedAt: time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.k.Marshal()
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Marshal = %d bytes, %v; want ErrInvalid", len(b), err)
			}
		})
	}
}

// Builders for hand-made KRLs in the parse tests.

func wstr(s []byte) []byte { return append(binary.BigEndian.AppendUint32(nil, uint32(len(s))), s...) }

func u64s(vs ...uint64) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return b
}

func header() []byte {
	b := []byte("SSHKRL\n\x00")
	b = binary.BigEndian.AppendUint32(b, 1)
	b = append(b, u64s(3, 0, 0)...)
	b = append(b, wstr(nil)...)
	return append(b, wstr([]byte("c"))...)
}

func section(typ byte, parts ...[]byte) []byte {
	return append([]byte{typ}, wstr(bytes.Join(parts, nil))...)
}

func krlOf(sections ...[]byte) []byte { return append(header(), bytes.Join(sections, nil)...) }

func certSect(caBlob []byte, subs ...[]byte) []byte {
	return section(sectionCertificates, append([][]byte{wstr(caBlob), wstr(nil)}, subs...)...)
}

func ext(name string, critical byte) []byte {
	return append(append(wstr([]byte(name)), critical), wstr([]byte("v"))...)
}

func TestParseAccepts(t *testing.T) {
	ca, _ := testKey(t, 1)
	user, _ := testKey(t, 5)
	blob := ca.Marshal()
	tests := []struct {
		name string
		in   []byte
		want KRL
	}{
		{
			// What `ssh-keygen -k` writes for serials 1-5, 7, 9.
			name: "bitmap",
			in:   krlOf(certSect(blob, section(certSerialBitmap, u64s(1), wstr([]byte{0x01, 0x5f})))),
			want: KRL{CAs: []CertSection{{CA: ca, Serials: []uint64{7, 9}, Ranges: []SerialRange{{1, 5}}}}},
		},
		{
			name: "bitmap with sign byte",
			in:   krlOf(certSect(blob, section(certSerialBitmap, u64s(100), wstr([]byte{0x00, 0x81})))),
			want: KRL{CAs: []CertSection{{CA: ca, Serials: []uint64{100, 107}}}},
		},
		{
			name: "bitmap ending at the top serial",
			in:   krlOf(certSect(blob, section(certSerialBitmap, u64s(math.MaxUint64-1), wstr([]byte{0x03})))),
			want: KRL{CAs: []CertSection{{CA: ca, Ranges: []SerialRange{{math.MaxUint64 - 1, math.MaxUint64}}}}},
		},
		{
			name: "empty bitmap and empty serial list",
			in:   krlOf(certSect(blob, section(certSerialBitmap, u64s(5), wstr(nil)), section(certSerialList))),
			want: KRL{CAs: []CertSection{{CA: ca}}},
		},
		{
			name: "repeated sections for one CA merge",
			in: krlOf(
				certSect(blob, section(certSerialList, u64s(9, 3))),
				certSect(nil, section(certKeyID, wstr([]byte("w")))),
				certSect(blob, section(certSerialRange, u64s(4, 8)), section(certKeyID, wstr([]byte("b")), wstr([]byte("a")))),
			),
			want: KRL{CAs: []CertSection{
				{CA: ca, Ranges: []SerialRange{{3, 9}}, KeyIDs: []string{"a", "b"}},
				{KeyIDs: []string{"w"}},
			}},
		},
		{
			name: "explicit key folds into SHA256",
			in:   krlOf(section(sectionExplicitKey, wstr(user.Marshal()))),
			want: KRL{KeySHA256: [][sha256.Size]byte{hashOf(user)}},
		},
		{
			name: "non-critical extensions are skipped",
			in: krlOf(
				section(sectionExtension, ext("bloom@example.org", 0)),
				certSect(blob, section(certExtension, ext("cert-bloom-serial", 0)), section(certSerialList, u64s(2))),
			),
			want: KRL{CAs: []CertSection{{CA: ca, Serials: []uint64{2}}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			tt.want.Version, tt.want.Comment = 3, "c"
			if g, w := viewOf(got), viewOf(&tt.want); !reflect.DeepEqual(g, w) {
				t.Fatalf("Parse =\n%+v\nwant\n%+v", g, w)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	ca, caSigner := testKey(t, 1)
	blob := ca.Marshal()
	cert := testCert(t, caSigner, 2, 5, "x")
	h1, h2 := sha256.Sum256([]byte("a")), sha256.Sum256([]byte("b"))
	if bytes.Compare(h1[:], h2[:]) > 0 {
		h1, h2 = h2, h1
	}
	good := krlOf(certSect(blob, section(certSerialList, u64s(1))))
	withHeader := func(mutate func(b []byte)) []byte {
		b := bytes.Clone(good)
		mutate(b)
		return b
	}

	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty input", nil, ErrMalformed},
		{"bad magic", withHeader(func(b []byte) { b[7] = 1 }), ErrMalformed},
		{"truncated header", good[:30], ErrMalformed},
		{"format version 2", withHeader(func(b []byte) { b[11] = 2 }), ErrUnsupported},
		{"flags set", withHeader(func(b []byte) { b[35] = 1 }), ErrUnsupported},
		{"date out of range", withHeader(func(b []byte) { b[20] = 0x80 }), ErrMalformed},
		{"NUL in comment", append(append(append([]byte("SSHKRL\n\x00\x00\x00\x00\x01"), u64s(0, 0, 0)...), wstr(nil)...), wstr([]byte("a\x00"))...), ErrMalformed},
		{"truncated section", good[:len(good)-1], ErrMalformed},
		{"section type only", append(bytes.Clone(good), sectionCertificates), ErrMalformed},
		{"unknown section", krlOf(section(9, nil)), ErrMalformed},
		{"signature section", krlOf(section(sectionSignature, wstr(blob)), wstr([]byte("sig"))), ErrUnsupported},
		{"SHA1 section", krlOf(section(sectionFingerprintSHA1, wstr(make([]byte, 20)))), ErrUnsupported},
		{"critical extension", krlOf(section(sectionExtension, ext("x@example.org", 1))), ErrUnsupported},
		{"extension trailing data", krlOf(section(sectionExtension, ext("x@example.org", 0), []byte{0})), ErrMalformed},
		{"CA key garbage", krlOf(certSect([]byte("\x00\x00\x00\x03abc"))), ErrMalformed},
		{"CA key is a certificate", krlOf(certSect(cert.Marshal())), ErrMalformed},
		{"CA header truncated", krlOf(section(sectionCertificates, wstr(blob))), ErrMalformed},
		{"serial 0 in list", krlOf(certSect(blob, section(certSerialList, u64s(4, 0)))), ErrMalformed},
		{"partial serial", krlOf(certSect(blob, section(certSerialList, u64s(4)[:7]))), ErrMalformed},
		{"range reversed", krlOf(certSect(blob, section(certSerialRange, u64s(9, 4)))), ErrMalformed},
		{"range from 0", krlOf(certSect(blob, section(certSerialRange, u64s(0, 4)))), ErrMalformed},
		{"range too long", krlOf(certSect(blob, section(certSerialRange, u64s(1, 4, 5)))), ErrMalformed},
		{"bitmap negative", krlOf(certSect(blob, section(certSerialBitmap, u64s(1), wstr([]byte{0x80})))), ErrMalformed},
		{"bitmap needless zero", krlOf(certSect(blob, section(certSerialBitmap, u64s(1), wstr([]byte{0x00, 0x01})))), ErrMalformed},
		{"bitmap zero byte only", krlOf(certSect(blob, section(certSerialBitmap, u64s(1), wstr([]byte{0x00})))), ErrMalformed},
		{"bitmap too long", krlOf(certSect(blob, section(certSerialBitmap, u64s(1), wstr(append([]byte{1}, make([]byte, maxBitmapBytes)...))))), ErrMalformed},
		{"bitmap wraps", krlOf(certSect(blob, section(certSerialBitmap, u64s(math.MaxUint64), wstr([]byte{0x02})))), ErrMalformed},
		{"bitmap revokes 0", krlOf(certSect(blob, section(certSerialBitmap, u64s(0), wstr([]byte{0x01})))), ErrMalformed},
		{"bitmap trailing data", krlOf(certSect(blob, section(certSerialBitmap, u64s(1), wstr([]byte{0x01}), []byte{0}))), ErrMalformed},
		{"empty key ID section", krlOf(certSect(blob, section(certKeyID))), ErrMalformed},
		{"NUL in key ID", krlOf(certSect(blob, section(certKeyID, wstr([]byte("a\x00"))))), ErrMalformed},
		{"truncated key ID", krlOf(certSect(blob, section(certKeyID, wstr([]byte("abc"))[:5]))), ErrMalformed},
		{"unknown cert subsection", krlOf(certSect(blob, section(0x30, nil))), ErrMalformed},
		{"critical cert extension", krlOf(certSect(blob, section(certExtension, ext("x", 1)))), ErrUnsupported},
		{"empty SHA256 section", krlOf(section(sectionFingerprintSHA256)), ErrMalformed},
		{"short SHA256", krlOf(section(sectionFingerprintSHA256, wstr(h1[:31]))), ErrMalformed},
		{"unsorted SHA256", krlOf(section(sectionFingerprintSHA256, wstr(h2[:]), wstr(h1[:]))), ErrMalformed},
		{"repeated SHA256", krlOf(section(sectionFingerprintSHA256, wstr(h1[:]), wstr(h1[:]))), ErrMalformed},
		{"empty explicit key section", krlOf(section(sectionExplicitKey)), ErrMalformed},
		{"explicit key garbage", krlOf(section(sectionExplicitKey, wstr([]byte("nope")))), ErrMalformed},
		{"explicit key is a certificate", krlOf(section(sectionExplicitKey, wstr(cert.Marshal()))), ErrMalformed},
		{"larger than OpenSSH loads", make([]byte, MaxSize+1), ErrUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := Parse(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse = %+v, %v; want %v", k, err, tt.want)
			}
			if k != nil {
				t.Fatalf("Parse returned a KRL with an error")
			}
		})
	}
	if _, err := Parse(good); err != nil {
		t.Fatalf("control case: %v", err)
	}
}

func TestIsRevoked(t *testing.T) {
	ca1Pub, ca1 := testKey(t, 1)
	ca2Pub, ca2 := testKey(t, 2)
	_, ca3 := testKey(t, 3)
	revokedUser, _ := testKey(t, 20)
	revokedCA, revokedCASigner := testKey(t, 4)
	k := &KRL{
		CAs: []CertSection{
			{CA: ca1Pub, Serials: []uint64{100}, Ranges: []SerialRange{{200, 210}}, KeyIDs: []string{"mallory"}},
			{CA: ca2Pub, Serials: []uint64{7}},
			{KeyIDs: []string{"eve"}},
		},
		Keys:      []ssh.PublicKey{revokedUser},
		KeySHA256: [][sha256.Size]byte{hashOf(revokedCA)},
	}
	other, _ := testKey(t, 21)
	tests := []struct {
		name string
		key  ssh.PublicKey
		want bool
	}{
		{"listed serial", testCert(t, ca1, 10, 100, "a"), true},
		{"range start", testCert(t, ca1, 10, 200, "a"), true},
		{"range end", testCert(t, ca1, 10, 210, "a"), true},
		{"after range", testCert(t, ca1, 10, 211, "a"), false},
		{"key ID", testCert(t, ca1, 10, 5, "mallory"), true},
		{"key ID of another CA's section", testCert(t, ca2, 10, 5, "mallory"), false},
		{"same serial, other CA", testCert(t, ca2, 10, 100, "a"), false},
		{"other CA's own serial", testCert(t, ca2, 10, 7, "a"), true},
		{"any-CA key ID", testCert(t, ca3, 10, 1, "eve"), true},
		{"unlisted CA", testCert(t, ca3, 10, 100, "a"), false},
		{"serial 0 never by serial", testCert(t, ca1, 10, 0, "a"), false},
		{"serial 0 by key ID", testCert(t, ca1, 10, 0, "mallory"), true},
		{"revoked plain key", revokedUser, true},
		{"certificate of a revoked key", testCert(t, ca1, 20, 1, "a"), true},
		{"certificate from a revoked CA key", testCert(t, revokedCASigner, 10, 1, "a"), true},
		{"revoked CA key itself", revokedCA, true},
		{"other plain key", other, false},
		{"nil", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := k.IsRevoked(tt.key); got != tt.want {
				t.Fatalf("IsRevoked = %v, want %v", got, tt.want)
			}
		})
	}
}
