package agent

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// benchRandomBytes is the size of the random file the binary exec
// benchmark prints benchExecBytes/benchRandomBytes times: /dev/urandom
// costs more CPU to read than either server spends, the page cache almost
// none.
const benchRandomBytes = 64 << 20

// benchBinaryRemote writes a file of random bytes that the benchmarks'
// account can read and returns the command that prints benchExecBytes of
// it: output like `cat backup.tar.gz`, which the recorder keeps in the
// side blob.
func benchBinaryRemote(b *testing.B) string {
	b.Helper()
	dir, err := os.MkdirTemp("", "sshward-bench-bin-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	data := make([]byte, benchRandomBytes)
	rnd := rand.NewChaCha8([32]byte{1})
	_, _ = rnd.Read(data)
	path := filepath.Join(dir, "random.bin")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Fatal(err)
	}
	return fmt.Sprintf("for i in $(seq %d); do cat %s; done", benchExecBytes/benchRandomBytes, path)
}

// BenchmarkSpoolDisk is the yardstick for the recorded figures: how fast
// the disk under the benchmarks' spool (the temporary directory) takes
// 1 GiB of buffered 32 KiB writes, as the recorder issues them, and the
// CPU the writing thread spends on it. A recorded session cannot go
// faster than its recording is written, so when a recorded MB/s figure
// comes near this one, the disk bounds it.
func BenchmarkSpoolDisk(b *testing.B) {
	buf := make([]byte, 32<<10)
	for i := range buf {
		buf[i] = byte(' ' + i%90)
	}
	for range b.N {
		f, err := os.CreateTemp(b.TempDir(), "disk-*.cast")
		if err != nil {
			b.Fatal(err)
		}
		before, start := selfCPU(b), time.Now()
		for n := 0; n < benchExecBytes; n += len(buf) {
			if _, err := f.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		wall, cpu := time.Since(start), selfCPU(b)-before
		f.Close()
		os.Remove(f.Name())
		b.ReportMetric(float64(benchExecBytes)/1e6/wall.Seconds(), "MB/s")
		b.ReportMetric(cpu.Seconds()/(float64(benchExecBytes)/1e9), "cpu-s/GB")
	}
}
