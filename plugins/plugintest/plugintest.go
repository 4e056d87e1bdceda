// Package plugintest builds real plugin binaries for tests and inspects the
// processes they become. The test plugin under testplugin/ does what a
// test asks of it through the request or event it receives.
package plugintest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPlugin is the import path of the steerable test plugin.
const TestPlugin = "github.com/sshward/sshward/plugins/plugintest/testplugin"

// Binary is a built plugin executable.
type Binary struct {
	Path   string // absolute
	SHA256 string // lowercase hex, what a plugins.Config pins
}

// Build compiles the main package pkg into dir with `go build` (the go
// command on PATH, else /usr/local/go/bin/go). It is for TestMain, which
// has no *testing.T; tests use MustBuild.
func Build(ctx context.Context, dir, pkg string) (Binary, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		return Binary{}, fmt.Errorf("plugintest: go build %s: %v\n%s", pkg, err, b)
	}
	sum, err := Sum(out)
	if err != nil {
		return Binary{}, err
	}
	return Binary{Path: out, SHA256: sum}, nil
}

// MustBuild is Build into t.TempDir().
func MustBuild(t testing.TB, pkg string) Binary {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b, err := Build(ctx, t.TempDir(), pkg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Sum is the hex SHA-256 of a file.
func Sum(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("plugintest: %w", err)
	}
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:]), nil
}

// Children returns the pids of this process's live children whose
// executable is path: the plugin processes a test started and has not
// reaped. Linux only (/proc).
func Children(t testing.TB, path string) []int {
	t.Helper()
	return processes(t, path, os.Getpid())
}

// Running returns the pids of every live process whose executable is
// path, whoever started it (a CA under test, say).
func Running(t testing.TB, path string) []int {
	t.Helper()
	return processes(t, path, -1)
}

// processes lists live processes running path, children of parent unless
// parent is -1.
func processes(t testing.TB, path string, parent int) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatalf("plugintest: read /proc: %v", err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid …: comm may hold spaces, so cut at the last ')'.
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 2 || f[0] == "Z" {
			continue // a zombie is dead, merely unreaped
		}
		if ppid, _ := strconv.Atoi(f[1]); parent != -1 && ppid != parent {
			continue
		}
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && exe == path {
			pids = append(pids, pid)
		}
	}
	return pids
}

// WaitChildren waits up to d for the children running path to number
// want, and returns them.
func WaitChildren(t testing.TB, path string, want int, d time.Duration) []int {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		pids := Children(t, path)
		if len(pids) == want {
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("plugintest: %d live children run %s, want %d: %v", len(pids), filepath.Base(path), want, pids)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WaitFile waits up to d for path to exist and returns its content.
func WaitFile(t testing.TB, path string, d time.Duration) []byte {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("plugintest: %s did not appear within %s", path, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
