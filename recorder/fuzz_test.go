package recorder_test

import (
	"bytes"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sshward/sshward/recorder"
	"github.com/sshward/sshward/recorder/recordertest"
)

// FuzzReader: any input either parses or fails with an error; never a panic,
// and every event that parses holds valid data.
func FuzzReader(f *testing.F) {
	f.Add([]byte(goodHeader + `[0.5, "o", "héllo\r\n"]` + "\n" + `[1, "r", "100x30"]` + "\n"))
	f.Add([]byte(goodHeader + `[1, "m", "x"]` + "\n" + `[0.5, "o", "late"]` + "\n"))
	f.Add([]byte(goodHeader + "\n"))
	f.Add([]byte(`{"version":2,"width":1,"height":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		rd, err := recorder.NewReader(bytes.NewReader(data))
		if err != nil {
			return
		}
		if h := rd.Header(); h.Check() != nil {
			t.Fatalf("accepted header %+v", h)
		}
		last := 0.0
		for {
			e, err := rd.Next()
			if err != nil {
				return
			}
			if e.Time < last {
				t.Fatalf("time went back: %v after %v", e.Time, last)
			}
			last = e.Time
			if e.Code == recorder.CodeResize {
				if _, _, err := e.Size(); err != nil {
					t.Fatalf("accepted resize %q", e.Data)
				}
			}
		}
	})
}

// FuzzWriterRoundTrip: arbitrary bytes, split arbitrarily across Output
// calls, read back as the same text (invalid UTF-8 replaced as
// strings.ToValidUTF8 does) in the same order.
func FuzzWriterRoundTrip(f *testing.F) {
	f.Add([]byte("héllo wörld ✓ 日本"), []byte{1, 2, 3})
	f.Add([]byte("a\xff\xfeb\xe6\x97"), []byte{2})
	f.Add([]byte("\x00\x1b[31m\"\\\u2028"), []byte{0, 5})
	f.Fuzz(func(t *testing.T, data, splits []byte) {
		var buf bytes.Buffer
		clock := newFakeClock(time.Millisecond)
		w, err := recorder.NewWriter(&buf, testHeader, time.Time{}, clock.Now)
		if err != nil {
			t.Fatal(err)
		}
		rest := data
		for i := 0; len(rest) > 0; i++ {
			n := len(rest)
			if len(splits) > 0 {
				n = min(n, int(splits[i%len(splits)]))
			}
			if n == 0 { // an empty call, then at least one byte
				if err := w.Output(nil); err != nil {
					t.Fatal(err)
				}
				n = 1
			}
			if err := w.Output(rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		_, evs := recordertest.MustParseCast(t, buf.Bytes())
		for _, e := range evs {
			if e.Data == "" {
				t.Fatal("empty event written")
			}
		}
		got, want := recordertest.Data(evs, recorder.CodeOutput), strings.ToValidUTF8(string(data), "\uFFFD")
		if got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	})
}

// FuzzOutputCRLF: for any valid UTF-8 output, split anywhere into reads,
// the cast of a session without a terminal has a CR before every LF and
// ExactOutput gives back exactly the bytes sent.
func FuzzOutputCRLF(f *testing.F) {
	f.Add([]byte("a\nb\r\nc\n\n"), uint8(3))
	f.Add([]byte("\r\n\r\r\n"), uint8(1))
	f.Add([]byte("ünï\ncode\n"), uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, split uint8) {
		if !utf8.Valid(data) {
			return
		}
		var buf bytes.Buffer
		w, err := recorder.NewWriter(&buf, recorder.Header{Width: 80, Height: 24}, time.Unix(0, 0), func() time.Time { return time.Unix(1, 0) })
		if err != nil {
			t.Fatal(err)
		}
		w.SetOutputCRLF(true)
		step := int(split)%7 + 1
		for i := 0; i < len(data); i += step {
			if err := w.Output(data[i:min(len(data), i+step)]); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		_, evs := recordertest.MustParseCast(t, buf.Bytes())
		got := recordertest.Data(evs, recorder.CodeOutput)
		if n, crlf := strings.Count(got, "\n"), strings.Count(got, "\r\n"); n != crlf {
			t.Fatalf("%d LF, %d of them after a CR: %q", n, crlf, got)
		}
		if exact := recorder.ExactOutput(recorder.Metadata{OutputNewlines: recorder.NewlinesCRLF}, []byte(got)); !bytes.Equal(exact, data) {
			t.Fatalf("ExactOutput = %q, want %q", exact, data)
		}
	})
}
