package store_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/store"
	"github.com/sshward/sshward/ca/store/storetest"
)

// crashChildEnv names the store file when the test binary runs as the
// writer child of TestAcknowledgedWritesSurviveKill.
const crashChildEnv = "SSHWARD_STORE_CRASH_CHILD"

// TestAcknowledgedWritesSurviveKill re-executes the test binary as a writer
// that prints each serial once its Update has returned, kills it with
// SIGKILL mid-stream, and checks that every serial it printed is in the
// file with its audit record. This proves Update acknowledges only after
// the commit reached the file; fdatasync (which bbolt calls before Commit
// returns) extends that to power loss.
func TestAcknowledgedWritesSurviveKill(t *testing.T) {
	if path := os.Getenv(crashChildEnv); path != "" {
		crashChild(path)
		return
	}
	path := filepath.Join(t.TempDir(), "ca.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestAcknowledgedWritesSurviveKill$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := make(chan struct{})
	timer := time.AfterFunc(30*time.Second, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()

	const killAfter = 400
	var acked []uint64
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		n, err := strconv.ParseUint(sc.Text(), 10, 64)
		if err != nil {
			t.Fatalf("child said %q", sc.Text())
		}
		acked = append(acked, n)
		if len(acked) == killAfter {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			close(killed)
		}
	}
	// Lines already in the pipe were acknowledged before the kill.
	err = cmd.Wait()
	select {
	case <-killed:
	default:
		t.Fatalf("child exited after %d acks before being killed: %v", len(acked), err)
	}
	t.Logf("%d writes acknowledged before SIGKILL", len(acked))

	db := storetest.MustOpenWith(t, store.Options{Path: path}) // storetest also verifies the chain on cleanup
	inAudit := map[uint64]bool{}
	evs, err := db.Audit(t.Context(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		inAudit[ev.Serial] = true
	}
	mustView(t, db, func(tx *store.Tx) error {
		for _, serial := range acked {
			if _, err := tx.GetCert(serial); err != nil {
				t.Errorf("acknowledged serial %d lost: %v", serial, err)
			}
			if !inAudit[serial] {
				t.Errorf("acknowledged serial %d has no audit record", serial)
			}
		}
		return nil
	})
	if _, err := db.VerifyAudit(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// crashChild writes issuance-shaped records from 16 goroutines until it is
// killed, printing each serial after its Update returned.
func crashChild(path string) {
	ctx := context.Background()
	db, err := store.Open(ctx, store.Options{Path: path})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	var next atomic.Uint64
	var mu sync.Mutex
	stop := time.Now().Add(20 * time.Second) // never outlive a parent that died
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for time.Now().Before(stop) {
				serial := next.Add(1)
				err := db.Update(ctx, func(tx *store.Tx) error {
					if err := tx.PutCert(&store.CertRecord{Serial: serial, KeyID: "crash", Kind: store.CertKindUser}); err != nil {
						return err
					}
					return tx.AppendAudit(&store.AuditEvent{Type: "cert.issue", Serial: serial})
				})
				if err != nil {
					fmt.Fprintln(os.Stderr, "child:", err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintln(os.Stdout, serial) // unbuffered: one write(2) per ack
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	os.Exit(3)
}
