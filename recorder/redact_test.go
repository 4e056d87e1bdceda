package recorder

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"
)

// testPEM is a PEM block shaped like `ssh-keygen -t ed25519 -N ”` output
// (the body is not a real key: only the shape matters).
const testPEM = "-----BEGIN OPENSSH PRIVATE KEY-----\r\n" +
	"b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\r\n" +
	"QyNTUxOQAAACDmZXh0cmFib2d1c2tleWJ5dGVzZm9ydGVzdGluZ29ubHkAAAAJRmFrZUtleQ\r\n" +
	"-----END OPENSSH PRIVATE KEY-----"

// reference redacts all of in at once with the regexp package: the
// semantics the streaming redactor must reproduce.
func reference(t testing.TB, pats []RedactPattern, in []byte) []byte {
	var alts []string
	for _, p := range pats {
		alts = append(alts, "("+p.Regexp+")")
	}
	re := regexp.MustCompile(strings.Join(alts, "|"))
	var out []byte
	last := 0
	for _, m := range re.FindAllSubmatchIndex(in, -1) {
		if m[1] == m[0] {
			continue
		}
		for g := range pats {
			if m[2+2*g] >= 0 {
				out = append(out, in[last:m[0]]...)
				out = append(out, "[REDACTED:"+pats[g].Name+"]"...)
				last = m[1]
				break
			}
		}
	}
	return append(out, in[last:]...)
}

// stream feeds in through a redactor in pieces cut at splits.
func stream(rd *Redaction, in []byte, splits []int, ticks map[int]bool) ([]byte, int) {
	r := newRedactor(rd)
	var out []byte
	maxHeld := 0
	prev := 0
	for k, s := range append(splits, len(in)) {
		if s < prev || s > len(in) {
			continue
		}
		out = append(out, r.write(in[prev:s], false)...)
		maxHeld = max(maxHeld, len(r.held))
		if ticks[k] {
			out = append(out, r.tick()...)
		}
		prev = s
	}
	out = append(out, r.write(nil, true)...)
	return out, maxHeld
}

func TestRedactStream(t *testing.T) {
	rd := MustDefaultRedaction()
	ghp := "ghp_" + strings.Repeat("aB3", 12)
	cases := []struct {
		name string
		in   string
		want string
	}{
		{"plain", "hello world\r\n$ ", "hello world\r\n$ "},
		{"aws", "key=AKIAIOSFODNN7EXAMPLE done", "key=[REDACTED:aws-access-key] done"},
		{"aws lowercase is not a key", "AKIAiosfodnn7example", "AKIAiosfodnn7example"},
		{"github", "token: " + ghp + "\n", "token: [REDACTED:github-token]\n"},
		{"github fine-grained", "github_pat_11ABCDEFG0123456789_abcdefghijkl x", "[REDACTED:github-token] x"},
		{"slack", "xoxb-123456789012-abcdef ok", "[REDACTED:slack-token] ok"},
		{"bearer", "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig\r\n", "Authorization: [REDACTED:bearer-token]\r\n"},
		{"bearer prose", "the Bearer token is short", "the Bearer token is short"},
		{"pem", "$ cat key\r\n" + testPEM + "\r\n$ ", "$ cat key\r\n[REDACTED:private-key]\r\n$ "},
		{"pem public stays", "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----", "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----"},
		{"two secrets", "AKIAIOSFODNN7EXAMPLE AKIAIOSFODNN7EXAMPLF", "[REDACTED:aws-access-key] [REDACTED:aws-access-key]"},
		{"utf8 around", "é AKIAIOSFODNN7EXAMPLE ü", "é [REDACTED:aws-access-key] ü"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := reference(t, DefaultRedactPatterns(), []byte(tc.in)); string(got) != tc.want {
				t.Fatalf("reference = %q, want %q", got, tc.want)
			}
			// Whole, and cut at every position into two and into bytes.
			if got, _ := stream(rd, []byte(tc.in), nil, nil); string(got) != tc.want {
				t.Fatalf("whole: %q, want %q", got, tc.want)
			}
			for i := 0; i <= len(tc.in); i++ {
				if got, _ := stream(rd, []byte(tc.in), []int{i}, nil); string(got) != tc.want {
					t.Fatalf("cut at %d: %q, want %q", i, got, tc.want)
				}
			}
			var every []int
			for i := 1; i < len(tc.in); i++ {
				every = append(every, i)
			}
			if got, _ := stream(rd, []byte(tc.in), every, nil); string(got) != tc.want {
				t.Fatalf("byte by byte: %q, want %q", got, tc.want)
			}
		})
	}
}

// TestRedactHoldsOnlyCandidates: ordinary output passes at once (nothing
// held, the result aliases the input); a possible secret at the end of a
// read is held until decided.
func TestRedactHoldsOnlyCandidates(t *testing.T) {
	r := newRedactor(MustDefaultRedaction())
	in := []byte("total 12\r\ndrwx------ 2 root root 4096 .\r\n$ ")
	if got := r.write(in, false); &got[0] != &in[0] || len(got) != len(in) || len(r.held) != 0 {
		t.Fatalf("plain output was copied or held: %q held %q", got, r.held)
	}
	if got := r.write([]byte("id AKIAIOSF"), false); string(got) != "id " || string(r.held) != "AKIAIOSF" {
		t.Fatalf("got %q held %q, want \"id \" held the key start", got, r.held)
	}
	if got := r.write([]byte("ODNN7EXAMPLE\r\n"), false); string(got) != "[REDACTED:aws-access-key]\r\n" {
		t.Fatalf("got %q", got)
	}
	// A partial literal start waits for the next read, even across ticks.
	if got := r.write([]byte("xo"), false); len(got) != 0 || string(r.held) != "xo" {
		t.Fatalf("got %q held %q", got, r.held)
	}
	if got := append(r.tick(), r.tick()...); len(got) != 0 || string(r.held) != "xo" {
		t.Fatalf("tick released a partial start: %q held %q", got, r.held)
	}
	if got := r.write([]byte("xo "), false); string(got) != "xoxo " {
		t.Fatalf("got %q", got)
	}
}

// TestRedactTickFailsSafe: a candidate past its literal start still
// undecided at a flush is redacted whole, up to where the pattern stops
// matching, even if it never completes.
func TestRedactTickFailsSafe(t *testing.T) {
	r := newRedactor(MustDefaultRedaction())
	var out []byte
	out = append(out, r.write([]byte("$ echo ghp_abc"), false)...)
	out = append(out, r.tick()...)
	if len(out) != len("$ echo ") {
		t.Fatalf("the first tick decided already: %q", out)
	}
	out = append(out, r.tick()...)
	out = append(out, r.write([]byte("defghijklmnopqrstuvwxyz0123456789ABCD"), false)...)
	out = append(out, r.write([]byte("EFG\r\n$ "), false)...)
	out = append(out, r.write(nil, true)...)
	if want := "$ echo [REDACTED:github-token]\r\n$ "; string(out) != want {
		t.Fatalf("got %q, want %q", out, want)
	}
}

// TestRedactWindow: a private key block longer than the window is redacted
// whole (drop mode) while the carry stays within the window.
func TestRedactWindow(t *testing.T) {
	rd, err := NewRedaction(DefaultRedactPatterns(), 256)
	if err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat("QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\r\n", 200)
	in := "before\r\n-----BEGIN RSA PRIVATE KEY-----\r\n" + body + "-----END RSA PRIVATE KEY-----\r\nafter AKIAIOSFODNN7EXAMPLE\r\n"
	var splits []int
	for i := 100; i < len(in); i += 100 {
		splits = append(splits, i)
	}
	got, held := stream(rd, []byte(in), splits, nil)
	if want := "before\r\n[REDACTED:private-key]\r\nafter [REDACTED:aws-access-key]\r\n"; string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if held > 256 {
		t.Fatalf("held %d bytes, window 256", held)
	}
}

func TestNewRedactionRefuses(t *testing.T) {
	cases := []struct {
		name string
		p    RedactPattern
		want string
	}{
		{"no literal start", RedactPattern{Name: "x", Regexp: `[a-z]+secret`}, "must begin with literal text"},
		{"case-insensitive", RedactPattern{Name: "x", Regexp: `(?i)token`}, "must begin with literal text"},
		{"bad name", RedactPattern{Name: "X Y", Regexp: `tok_[a-z]{4}`}, "name may hold only"},
		{"bad regexp", RedactPattern{Name: "x", Regexp: `tok_(`}, "missing closing )"},
		{"empty match", RedactPattern{Name: "x", Regexp: `a*`}, "literal text"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewRedaction([]RedactPattern{tc.p}, 0)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestWriterRedacts: the Writer applies redaction to output and input, and
// the recording holds the replacement, never the secret.
func TestWriterRedacts(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Header{Width: 80, Height: 24}, time.Unix(1700000000, 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	w.SetRedaction(MustDefaultRedaction())
	for _, p := range []string{"cat k\r\n-----BEGIN EC PRIVATE KEY-----\r\nMHcCAQEEI", "Bxx\r\n-----END EC PRIVATE KEY-----\r\n$ AKIA"} {
		if err := w.Output([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Input([]byte("export T=xoxp-1234567890-abcdef\r")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	s := buf.String()
	for _, secret := range []string{"MHcCAQEEI", "PRIVATE KEY", "xoxp-1234567890"} {
		if strings.Contains(s, secret) {
			t.Errorf("recording holds %q:\n%s", secret, s)
		}
	}
	for _, want := range []string{"[REDACTED:private-key]", "[REDACTED:slack-token]", `"o", "AKIA"`} {
		if !strings.Contains(s, want) {
			t.Errorf("recording lacks %q:\n%s", want, s)
		}
	}
}

// FuzzRedact: arbitrary bytes (with secrets spliced in), cut arbitrarily,
// with flush ticks anywhere: no panic; the carry stays within the window;
// the result never contains a match of any pattern; without ticks and
// within the window the result is exactly what regexp gives on the whole.
func FuzzRedact(f *testing.F) {
	f.Add([]byte("hello AKIAIOSFODNN7EXAMPLE"), []byte{3, 9}, uint8(0), false)
	f.Add([]byte(testPEM), []byte{40, 2, 77}, uint8(1), true)
	f.Add([]byte("Bearer abcdefghijklmnopqrstuvwxyz=="), []byte{8}, uint8(2), true)
	f.Add([]byte("ghp_ghp_ghp_xoxb-xoxb-1234567890aaaa"), []byte{1, 1, 1, 1}, uint8(3), false)
	f.Add([]byte("é\xff\xfeAKIA\xe2\x82"), []byte{2, 5}, uint8(4), true)
	pats := DefaultRedactPatterns()
	rdSmall, err := NewRedaction(pats, 64)
	if err != nil {
		f.Fatal(err)
	}
	rdBig := MustDefaultRedaction()
	var res []*regexp.Regexp
	for _, p := range pats {
		res = append(res, regexp.MustCompile(p.Regexp))
	}
	secrets := []string{"AKIAIOSFODNN7EXAMPLE", "ghp_" + strings.Repeat("x", 36), "xoxb-1234567890", "Bearer 0123456789abcdef", testPEM, "-----BEGIN ", "AKIA"}
	f.Fuzz(func(t *testing.T, data, cuts []byte, splice uint8, tick bool) {
		if len(data) > 4096 {
			return
		}
		// Splice a secret in so that interesting inputs are common.
		s := secrets[int(splice)%len(secrets)]
		at := 0
		if len(data) > 0 {
			at = int(splice) % (len(data) + 1)
		}
		in := append(append(append([]byte(nil), data[:at]...), s...), data[at:]...)
		var splits []int
		pos := 0
		ticks := map[int]bool{}
		for k, c := range cuts {
			pos += int(c)
			splits = append(splits, pos)
			if tick && c%3 == 0 {
				ticks[k] = true
			}
		}
		for _, rd := range []*Redaction{rdSmall, rdBig} {
			got, held := stream(rd, in, splits, ticks)
			if held > rd.maxMatch {
				t.Fatalf("held %d bytes, window %d", held, rd.maxMatch)
			}
			for i, re := range res {
				if m := re.Find(got); m != nil {
					t.Fatalf("result holds a match of %s: %q\nin:  %q\nout: %q", pats[i].Name, m, in, got)
				}
			}
			if rd == rdBig && len(ticks) == 0 {
				if want := reference(t, pats, in); !bytes.Equal(got, want) {
					t.Fatalf("streaming differs from regexp:\nin:   %q\ngot:  %q\nwant: %q", in, got, want)
				}
			}
		}
	})
}

// BenchmarkRedactOutput: the cost of redaction on ordinary terminal output
// (ls -l, compiler messages), per read of 32 KiB.
func BenchmarkRedactOutput(b *testing.B) {
	line := "-rw-r--r-- 1 root root  4096 Dec  4 17:00 ghost-writer.go  xo AKIA? github.com/x/y: Bearer\r\n"
	in := []byte(strings.Repeat(line, 32<<10/len(line)))
	r := newRedactor(MustDefaultRedaction())
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		r.write(in, false)
	}
}

func BenchmarkRedactPlainOutput(b *testing.B) {
	line := "-rw-r--r-- 1 root root  4096 Dec  4 17:00 main.go\r\n"
	in := []byte(strings.Repeat(line, 32<<10/len(line)))
	r := newRedactor(MustDefaultRedaction())
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		r.write(in, false)
	}
}

// BenchmarkRedactReads: the redactor alone on the Writer benchmark's reads
// (ls -l-like text with UTF-8, NUL bytes).
func BenchmarkRedactReads(b *testing.B) {
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"text", bytes.Repeat([]byte("drwxr-xr-x 2 root root 4096 Nov 21 10:00 héllo ✓\r\n"), 700)[:32<<10]},
		{"zeros", make([]byte, 32<<10)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			r := newRedactor(MustDefaultRedaction())
			b.SetBytes(int64(len(tc.data)))
			for b.Loop() {
				r.write(tc.data, false)
			}
		})
	}
}
