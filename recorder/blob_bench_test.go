package recorder_test

import (
	"crypto/rand"
	"io"
	"testing"
	"time"

	"github.com/sshward/sshward/recorder"
)

// BenchmarkBlobOutput: the Writer's cost for binary output (classification,
// blob write, stream digest, references), 32 KiB per call as the agent
// reads, sealed per call as a closed tier commits.
func BenchmarkBlobOutput(b *testing.B) {
	random := make([]byte, 32<<10)
	rand.Read(random)
	random[0] = 0xff
	for _, tc := range []struct {
		name string
		data []byte
	}{{"zeros", make([]byte, 32<<10)}, {"random", random}} {
		b.Run(tc.name, func(b *testing.B) {
			w, err := recorder.NewWriter(io.Discard, testHeader, time.Time{}, nil)
			if err != nil {
				b.Fatal(err)
			}
			w.SetOutputCRLF(true)
			w.SetBlob(io.Discard, 0, true)
			b.SetBytes(int64(len(tc.data)))
			for b.Loop() {
				if err := w.Output(tc.data); err != nil {
					b.Fatal(err)
				}
				if err := w.SealBlob(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
