package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"unicode/utf8"
)

// FuzzDecodeEvent: whatever DecodeEvent accepts, encoding/json reads the
// same way.
func FuzzDecodeEvent(f *testing.F) {
	for _, s := range []string{`[0.5,"o","hi\r\n"]`, `[1,"i","\u007f"]`, ` [ 2.0 , "m" , "x" ] `, `[1e3,"o","\ud83d\ude00"]`,
		`[0x10,"o","a"]`, `[-1,"o","a"]`, `[01,"o","a"]`, `[1,"o","a\"b"]`, `[1,"o",]`, `{"version":2}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		tm, code, data, err := DecodeEvent(line)
		if err != nil {
			return
		}
		var parts []json.RawMessage
		if json.Unmarshal(line, &parts) != nil || len(parts) != 3 {
			t.Fatalf("DecodeEvent accepted %q, encoding/json does not", line)
		}
		var jt float64
		var jc, jd string
		if json.Unmarshal(parts[0], &jt) != nil || json.Unmarshal(parts[1], &jc) != nil || json.Unmarshal(parts[2], &jd) != nil {
			t.Fatalf("DecodeEvent accepted %q with wrong types", line)
		}
		if jt != tm || jc != code || jd != data || tm < 0 {
			t.Fatalf("%q: got (%v %q %q), encoding/json (%v %q %q)", line, tm, code, data, jt, jc, jd)
		}
	})
}

// FuzzExtractor: lines do not depend on how the stream was cut into events
// (at rune boundaries, as events are), and every line is valid, trimmed,
// bounded text without controls.
func FuzzExtractor(f *testing.F) {
	f.Add("ls -la\r\n\x1b[1;31mred\x1b[0m\r\nprompt$ ", 3, true)
	f.Add("\x1b]0;title\x07a\bb\x7fc\r\x15d\n", 7, false)
	f.Add("\x1bP1;2q\x1b\\text\x1b(B\x1b7\x1b8\x1b[?1049h", 1, true)
	f.Fuzz(func(t *testing.T, data string, cut int, input bool) {
		data = string([]rune(data)) // events carry valid UTF-8
		code := "o"
		if input {
			code = "i"
		}
		whole := Extractor{Code: code}
		want := whole.Flush(whole.Feed(1, data, nil))
		if cut < 0 {
			cut = -cut
		}
		if len(data) > 0 {
			cut %= len(data) + 1
		} else {
			cut = 0
		}
		for cut > 0 && cut < len(data) && !utf8.RuneStart(data[cut]) {
			cut--
		}
		split := Extractor{Code: code}
		got := split.Feed(1, data[:cut], nil)
		// The carried state survives a JSON round trip (it is saved so).
		raw, _ := json.Marshal(split)
		var resumed Extractor
		if err := json.Unmarshal(raw, &resumed); err != nil {
			t.Fatal(err)
		}
		got = resumed.Flush(resumed.Feed(1, data[cut:], got))
		if len(got) != len(want) {
			t.Fatalf("%q cut at %d: %d lines, whole %d", data, cut, len(got), len(want))
		}
		for i := range got {
			if got[i].Text != want[i].Text {
				t.Fatalf("%q cut at %d: line %d %q, whole %q", data, cut, i, got[i].Text, want[i].Text)
			}
			l := got[i].Text
			if !utf8.ValidString(l) || l == "" || len(l) > MaxLineText || bytes.ContainsAny([]byte(l), "\x1b\r\n\x07\b") {
				t.Fatalf("bad line %q", l)
			}
		}
	})
}

// FuzzAppendChunks: however a cast is cut into chunks, whole-line chunks
// are stored byte for byte, others are refused, and a finish with the
// digest of what was sent succeeds.
func FuzzAppendChunks(f *testing.F) {
	f.Add([]byte(`[0.1,"o","a"]`+"\n"+`[0.2,"o","b"]`+"\n"), []byte{3, 20, 1})
	f.Add([]byte("x\ny\nz"), []byte{1, 1})
	f.Add([]byte("\n\n\n"), []byte{0, 1, 2})
	s := mustOpen(f, "")
	n := 0
	f.Fuzz(func(t *testing.T, data []byte, cuts []byte) {
		if len(data) > 1<<16 {
			return
		}
		ctx := context.Background()
		n++
		id := "f" + string(rune('a'+n%26)) + string(rune('a'+n/26%26)) + string(rune('a'+n/676%26)) + "-" + itoa(n)
		if _, err := s.Start(ctx, StartRequest{ID: id, Owner: "h"}); err != nil {
			t.Fatal(err)
		}
		var sent []byte
		var stored int64
		rest := data
		for i := 0; len(rest) > 0; i++ {
			k := len(rest)
			if i < len(cuts) {
				k = min(int(cuts[i])+1, len(rest))
			}
			chunk := rest[:k]
			rest = rest[k:]
			got, err := s.Append(ctx, id, "h", stored, chunk)
			if chunk[len(chunk)-1] != '\n' {
				if !errors.Is(err, ErrChunk) {
					t.Fatalf("chunk %q without newline: %v", chunk, err)
				}
				continue
			}
			if err != nil || got != stored+int64(len(chunk)) {
				t.Fatalf("append %q at %d: %d %v", chunk, stored, got, err)
			}
			stored = got
			sent = append(sent, chunk...)
		}
		m := meta(id, "staging", sent)
		if _, err := s.Finish(ctx, FinishRequest{ID: id, Owner: "h", Meta: m}); err != nil {
			t.Fatalf("finish: %v", err)
		}
		f, err := s.OpenCast(id)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		buf.ReadFrom(f)
		f.Close()
		if !bytes.Equal(buf.Bytes(), sent) {
			t.Fatalf("stored %q, sent %q", buf.Bytes(), sent)
		}
	})
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
