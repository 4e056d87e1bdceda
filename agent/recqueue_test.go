package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/ca/api"
	"github.com/sshward/sshward/recorder"
	"github.com/sshward/sshward/recorder/recordertest"
)

// stalledRun is one session run against a recorder whose disk stalls.
type stalledRun struct {
	a        *testAgent
	key      *userKey
	received []byte // what the client received on stdout
	errOut   string
	err      error
}

// runStalled starts an agent of tier whose spool writes through disk,
// runs `seq 1 N` over stock ssh once the recording exists, holding the
// disk from then on until until() reports true (polled), and returns what
// the client received. The command first reads a line from stdin, so that
// the disk is held before the first byte of output.
func runStalled(t *testing.T, tier string, ext map[string]string, disk *recordertest.SlowDisk, until func(a *testAgent) bool) stalledRun {
	t.Helper()
	ca := newFakeCA(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	sp, err := recorder.OpenSpool(context.Background(), recorder.SpoolConfig{
		Dir: SpoolDir(dataDir), OpenFile: disk.OpenFile, FlushInterval: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	a := startAgent(t, ca, agentOpts{tier: tier, dataDir: dataDir, cfg: func(c *Config) {
		c.Spool = RecorderSpool(sp)
		c.LookupUser = testUserLookup(t, t.TempDir())
	}})
	c := newSSHClient(t, ca, a)
	login := currentUser(t)
	k := ca.issue(t, c.home, certSpec{tier: tier, keyID: "alice@local stalled disk " + tier,
		principals: []string{login}, extensions: ext})

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// 14.9 MB of lines: more than the recorder queue, the pipe and the
	// spool's buffer hold together, even when the recorder took a whole
	// queue (4 MiB) before its first write stalled: with 5.9 MB, a busy
	// machine let the two queues absorb it all, and nothing ever waited.
	cmd := exec.CommandContext(ctx, "ssh", append(c.args(k, login), "head -n1 >/dev/null; seq 1 "+strconv.Itoa(seqLines))...)
	cmd.Env = c.env()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	release := func() {}
	defer func() { release() }()

	// The recording exists (its header is on disk): hold the disk, then
	// let the command print.
	poll(t, "the session's recording to start", func() bool {
		casts, _ := filepath.Glob(filepath.Join(SpoolDir(dataDir), "*.cast"))
		if len(casts) != 1 {
			return false
		}
		fi, err := os.Stat(casts[0])
		return err == nil && fi.Size() > 0
	})
	disk.Hold()
	release = disk.Release
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	poll(t, "the recorder to fall behind", func() bool { return until(a) })
	release()
	select {
	case err = <-done:
	case <-ctx.Done():
		t.Fatalf("ssh did not end: %v", ctx.Err())
	}
	return stalledRun{a: a, key: k, received: out.Bytes(), errOut: errb.String(), err: err}
}

// poll waits (bounded, generously) until cond holds.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 60s for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// seqLines is how many lines the stalled session prints.
const seqLines = 2_000_000

// wantSeq is what `seq 1 seqLines` prints.
func wantSeq() []byte {
	var b bytes.Buffer
	for i := 1; i <= seqLines; i++ {
		fmt.Fprintf(&b, "%d\n", i)
	}
	return b.Bytes()
}

// castSegments reads the recording of a session without a terminal as
// the runs of output between drop markers: segs[i] is the exact output
// (added CRs undone) after gaps[i-1] bytes were dropped (gaps[i] follows
// segs[i]).
func castSegments(t *testing.T, spoolDir, id string) (segs [][]byte, gaps []int64) {
	t.Helper()
	_, evs := readCast(t, castPath(spoolDir, id))
	var cur strings.Builder
	flush := func() {
		segs = append(segs, recorder.ExactOutput(recorder.Metadata{OutputNewlines: recorder.NewlinesCRLF}, []byte(cur.String())))
		cur.Reset()
	}
	for _, e := range evs {
		switch e.Code {
		case recorder.CodeOutput:
			cur.WriteString(e.Data)
		case recorder.CodeMarker:
			if n, ok := recorder.ParseDroppedLabel(e.Data); ok {
				flush()
				gaps = append(gaps, n)
			}
		}
	}
	flush()
	return segs, gaps
}

// TestClosedTierStalledDiskLosesNothing: the recorder's disk stalls while
// a production session (fails closed) prints 14.9 MB as fast as it can.
// The session must wait for the recorder (the pump is seen waiting for
// room), and once the disk goes on, every byte the client received is in
// the cast, in order, with no drop marker: backpressure, never loss.
func TestClosedTierStalledDiskLosesNothing(t *testing.T) {
	disk := &recordertest.SlowDisk{}
	r := runStalled(t, api.TierProduction, productionExt(), disk, func(a *testAgent) bool {
		waits, _ := a.srv.recQueues.counts()
		return waits > 0 && disk.Stalled() > 0
	})
	if r.err != nil {
		t.Fatalf("ssh: %v\n%s", r.err, r.errOut)
	}
	if want := wantSeq(); !bytes.Equal(r.received, want) {
		t.Fatalf("the client received %d bytes, want the %d seq printed", len(r.received), len(want))
	}
	spool := SpoolDir(r.a.dataDir)
	m := waitRecording(t, spool, func(m recorder.Metadata) bool { return m.KeyID == r.key.cert.KeyId })
	segs, gaps := castSegments(t, spool, m.SessionID)
	if len(gaps) != 0 {
		t.Fatalf("a closed tier dropped output: markers for %v bytes", gaps)
	}
	if !bytes.Equal(segs[0], r.received) {
		t.Fatalf("the cast holds %d bytes of output, the client received %d: not the same", len(segs[0]), len(r.received))
	}
	if !m.Complete || m.BytesOut != int64(len(r.received)) {
		t.Errorf("metadata complete=%v (%q) bytes_out=%d, want complete with %d", m.Complete, m.Incomplete, m.BytesOut, len(r.received))
	}
	if _, drops := r.a.srv.recQueues.counts(); drops != 0 {
		t.Errorf("%d offers dropped on a closed tier", drops)
	}
}

// TestOpenTierStalledDiskDropsWithMarker: the same stall on a staging
// session (fails open). The session is not slowed: the client receives
// everything while the recorder is stuck, so output is dropped from the
// recording. The cast then says exactly how much is missing where: its
// output runs, read between the sshward-dropped markers, are the received
// bytes with gaps of exactly the markers' sizes. The recording closes
// incomplete, the alert is logged, the drop audited and an
// unrecorded-session report (phase dropped) queued for the CA and
// playback.
func TestOpenTierStalledDiskDropsWithMarker(t *testing.T) {
	disk := &recordertest.SlowDisk{}
	r := runStalled(t, api.TierStaging, stagingExt(), disk, func(a *testAgent) bool {
		_, drops := a.srv.recQueues.counts()
		return drops > 0
	})
	if r.err != nil {
		t.Fatalf("ssh: %v\n%s", r.err, r.errOut)
	}
	if want := wantSeq(); !bytes.Equal(r.received, want) {
		t.Fatalf("the client received %d bytes, want the %d seq printed", len(r.received), len(want))
	}
	spool := SpoolDir(r.a.dataDir)
	m := waitRecording(t, spool, func(m recorder.Metadata) bool { return m.KeyID == r.key.cert.KeyId })
	segs, gaps := castSegments(t, spool, m.SessionID)
	if len(gaps) == 0 {
		t.Fatal("the recorder dropped output but the cast has no sshward-dropped marker")
	}
	pos, dropped := 0, int64(0)
	for i, seg := range segs {
		if !bytes.Equal(seg, r.received[pos:min(len(r.received), pos+len(seg))]) {
			t.Fatalf("output run %d of the cast (%d bytes) is not what the client received at byte %d", i, len(seg), pos)
		}
		pos += len(seg)
		if i < len(gaps) {
			pos += int(gaps[i])
			dropped += gaps[i]
		}
	}
	if pos != len(r.received) {
		t.Fatalf("recorded runs and dropped markers cover %d bytes, the client received %d", pos, len(r.received))
	}
	t.Logf("received %d bytes; %d dropped in %d gaps", len(r.received), dropped, len(gaps))
	if m.Complete || !strings.Contains(m.Incomplete, fmt.Sprintf("%d bytes of output were not recorded", dropped)) {
		t.Errorf("metadata complete=%v incomplete=%q, want incomplete naming %d dropped bytes", m.Complete, m.Incomplete, dropped)
	}
	if m.BytesOut != int64(len(r.received))-dropped {
		t.Errorf("bytes_out %d, want the %d recorded", m.BytesOut, int64(len(r.received))-dropped)
	}
	keyID := r.key.cert.KeyId
	r.a.logs.find(t, map[string]string{"level": "ERROR", "alert": "true", "key_id": keyID, "on_recording_failure": "open"})
	r.a.logs.find(t, map[string]string{"msg": "audit", "action": AuditRecordingDropped, "key_id": keyID})
	r.a.logs.find(t, map[string]string{"msg": "audit", "action": AuditSessionUnrecorded, "key_id": keyID, "detail": api.UnrecordedDropped})
	st, err := readUnrecordedStatus(r.a.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, rec := range st.Last {
		if rec.Event.SessionID == m.SessionID && rec.Event.Phase == api.UnrecordedDropped &&
			strings.Contains(rec.Event.Reason, "could not keep up") {
			found = true
		}
	}
	if !found {
		t.Errorf("no unrecorded-session report with phase %q for %s: %+v", api.UnrecordedDropped, m.SessionID, st.Last)
	}
}

// TestRecQueue: the queue's accounting on its own. A closed tier's put
// waits for room and fails once the recorder stopped; an open tier's offer
// drops what does not fit and hands the count to the next item, or to an
// empty last item when the pump ends.
func TestRecQueue(t *testing.T) {
	t.Run("offer drops and counts", func(t *testing.T) {
		q := newRecQueue(10)
		q.offer([]byte("abcdef"))
		q.offer([]byte("ghijk")) // 11 > 10: dropped
		q.offer([]byte("lmn"))   // 9: fits
		q.offer([]byte("op"))    // 11: dropped
		// "lmn" follows a drop: it must not join "abcdef", and carries
		// the count of the drop before it.
		items, ok := q.take(nil)
		if !ok || len(items) != 2 || string(items[0].b) != "abcdef" || items[0].dropped != 0 ||
			string(items[1].b) != "lmn" || items[1].dropped != 5 {
			t.Fatalf("items %+v", items)
		}
		q.release(items)
		q.close()
		items, ok = q.take(nil)
		if !ok || len(items) != 1 || len(items[0].b) != 0 || items[0].dropped != 2 {
			t.Fatalf("the drop at the end: %+v %v", items, ok)
		}
		if _, ok := q.take(nil); ok {
			t.Fatal("take after the end")
		}
		if got := q.drops.Load(); got != 2 {
			t.Fatalf("drops %d", got)
		}
	})
	t.Run("put waits, stop fails it", func(t *testing.T) {
		q := newRecQueue(10)
		if !q.put([]byte("0123456789")) {
			t.Fatal("put into an empty queue failed")
		}
		res := make(chan bool)
		go func() { res <- q.put([]byte("x")) }()
		poll(t, "the put to wait", func() bool { return q.waits.Load() == 1 })
		q.stop()
		if <-res {
			t.Fatal("put succeeded after the recorder stopped")
		}
	})
	t.Run("pass counts capacity", func(t *testing.T) {
		// One byte in a 64-byte buffer weighs 64: a slow client must not
		// make the sender hold a buffer per small read without bound.
		q := newRecQueue(100)
		small := func() []recItem { return []recItem{{b: make([]byte, 1, 64)}} }
		if !q.pass(small()) {
			t.Fatal("pass into an empty queue failed")
		}
		res := make(chan bool)
		go func() { res <- q.pass(small()) }()
		poll(t, "the second pass to wait", func() bool { return q.waits.Load() == 1 })
		q.stop()
		if <-res {
			t.Fatal("pass succeeded after stop")
		}
	})
	t.Run("putRead queues large reads without a copy", func(t *testing.T) {
		q := newRecQueue(recQueueBytes)
		buf := make([]byte, recChunkSize)
		next, ok := q.putRead(buf, recChunkSize/2)
		if !ok || &next[0] == &buf[0] || len(next) != recChunkSize {
			t.Fatalf("a large read was not handed over (ok %v)", ok)
		}
		again, ok := q.putRead(next, 100)
		if !ok || &again[0] != &next[0] {
			t.Fatal("a small read's buffer was not given back for the next read")
		}
		// The small read joins the large one's buffer, which has room.
		items, _ := q.take(nil)
		if len(items) != 1 || &items[0].b[0] != &buf[0] || len(items[0].b) != recChunkSize/2+100 {
			t.Fatalf("items %d", len(items))
		}
	})
	t.Run("put waits, take frees", func(t *testing.T) {
		q := newRecQueue(10)
		q.put([]byte("0123456789"))
		res := make(chan bool)
		go func() { res <- q.put([]byte("x")) }()
		poll(t, "the put to wait", func() bool { return q.waits.Load() == 1 })
		items, _ := q.take(nil)
		if !<-res {
			t.Fatal("put failed")
		}
		items2, _ := q.take(nil)
		if string(items[0].b) != "0123456789" || string(items2[0].b) != "x" {
			t.Fatalf("items %q %q", items[0].b, items2[0].b)
		}
	})
}
