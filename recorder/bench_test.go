package recorder_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/sshward/sshward/recorder"
	"github.com/sshward/sshward/recorder/recordertest"
)

// benchInputs are 32 KiB reads (the SSH channel's usual size): listing-like
// text, and NUL bytes from /dev/zero, which grow sixfold when escaped.
var benchInputs = []struct {
	name string
	data []byte
}{
	{"text", bytes.Repeat([]byte("drwxr-xr-x 2 root root 4096 Nov 21 10:00 héllo ✓\r\n"), 700)[:32<<10]},
	{"zeros", make([]byte, 32<<10)},
}

// BenchmarkRecordingOutput measures the recording path of a busy session
// into a spool file.
func BenchmarkRecordingOutput(b *testing.B) { benchRecording(b, recorder.SpoolConfig{}) }

func benchRecording(b *testing.B, cfg recorder.SpoolConfig) {
	for _, tc := range benchInputs {
		b.Run(tc.name, func(b *testing.B) {
			s := recordertest.MustSpool(b, cfg)
			r, err := s.Create(context.Background(), testMetadata(fmt.Sprint("bench-", b.N)), testHeader)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(tc.data)))
			b.ReportAllocs()
			for b.Loop() {
				if err := r.Output(tc.data); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := r.Close(context.Background(), recorder.EndInfo{}); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkWriterRedactedOutput is BenchmarkWriterOutput with the default
// redaction patterns, as the spool applies them: the cost of keeping
// secrets out.
func BenchmarkWriterRedactedOutput(b *testing.B) {
	for _, tc := range benchInputs {
		b.Run(tc.name, func(b *testing.B) {
			w, err := recorder.NewWriter(io.Discard, testHeader, time.Time{}, nil)
			if err != nil {
				b.Fatal(err)
			}
			w.SetRedaction(recorder.MustDefaultRedaction())
			b.SetBytes(int64(len(tc.data)))
			b.ReportAllocs()
			for b.Loop() {
				if err := w.Output(tc.data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkWriterOutput measures encoding alone.
func BenchmarkWriterOutput(b *testing.B) {
	for _, tc := range benchInputs {
		b.Run(tc.name, func(b *testing.B) {
			w, err := recorder.NewWriter(io.Discard, testHeader, time.Time{}, nil)
			if err != nil {
				b.Fatal(err)
			}
			w.SetRedaction(nil)
			b.SetBytes(int64(len(tc.data)))
			b.ReportAllocs()
			for b.Loop() {
				if err := w.Output(tc.data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
