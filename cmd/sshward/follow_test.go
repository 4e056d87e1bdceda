package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sshward/sshward/cmd/internal/cli"
	"github.com/sshward/sshward/playback/web/webtest"
)

// TestPlayFollowsAcrossRestart is issue 9's "Live follow says why it
// stopped": `sshward play` follows a live session on a real playback
// server; the server is stopped as a restart stops it (listener closed,
// the follow stream ended) while the session goes on printing, and started
// again on the same port. play must say the connection was lost and that it
// reconnects, then go on with exactly the bytes after the ones it had: every
// line once, in order, none missing, and end when the session does.
func TestPlayFollowsAcrossRestart(t *testing.T) {
	st := webtest.New(t)
	lines := func(from, to int) []webtest.Step {
		var steps []webtest.Step
		for i := from; i <= to; i++ {
			steps = append(steps, webtest.Step{After: 10 * time.Millisecond, Output: fmt.Sprintf("line-%03d\r\n", i)})
		}
		return steps
	}
	live := st.StartLive(t, webtest.Session{ID: "s-follow", User: "dave", Steps: lines(1, 1)})
	home := st.Home(t, webtest.Auditor)

	var out, errb syncBuffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, now: time.Now,
		getenv: func(k string) string {
			if k == "SSHWARD_HOME" {
				return home
			}
			return ""
		}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- cli.Exit("sshward", run(ctx, []string{"play", "s-follow", "--speed", "1000"}, e), &errb)
	}()
	waitOut := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s\nstdout: %q\nstderr: %q", what, out.String(), errb.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitOut("line-001", func() bool { return strings.Contains(out.String(), "line-001") })
	live.Add(t, lines(2, 10)...)
	waitOut("line-010", func() bool { return strings.Contains(out.String(), "line-010") })

	st.StopServer(t)
	waitOut("the lost-connection line", func() bool { return strings.Contains(errb.String(), "reconnecting") })
	// The session goes on while the server is away: the host's spool keeps
	// it and ships it after the restart.
	live.Add(t, lines(11, 20)...)
	st.StartServer(t)
	waitOut("line-020", func() bool { return strings.Contains(out.String(), "line-020") })
	live.Add(t, lines(21, 30)...)
	live.Finish(t)

	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("play: exit %d\nstderr: %s", code, errb.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("play did not end with the session\nstdout: %q\nstderr: %q", out.String(), errb.String())
	}
	var want strings.Builder
	for i := 1; i <= 30; i++ {
		fmt.Fprintf(&want, "line-%03d\r\n", i)
	}
	if got := out.String(); got != want.String() {
		t.Errorf("play wrote\n%q\nwant every line once, in order:\n%q", got, want.String())
	}
	stderr := errb.String()
	t.Logf("play said:\n%s", stderr)
	lost := strings.Index(stderr, "sshward: connection to the playback server lost")
	back := strings.Index(stderr, "sshward: reconnected, resuming at byte")
	if lost < 0 || back < lost || !strings.Contains(stderr[lost:], "reconnecting…") {
		t.Errorf("stderr = %q, want the lost connection, then the reconnection", stderr)
	}

	// ?offset= on the finished recording: the bytes from there, said in
	// X-Sshward-Offset; past the end, nothing; not a byte count, refused.
	get := func(q string) (int, string, string) {
		req, err := http.NewRequest(http.MethodGet, st.URL+"/api/sessions/s-follow/cast?"+q, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+st.AuditorToken)
		resp, err := st.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("X-Sshward-Offset"), string(b)
	}
	_, _, whole := get("")
	if code, off, b := get("offset=10"); code != http.StatusOK || off != "10" || b != whole[10:] {
		t.Errorf("offset=10: %d, header %q, %d bytes; want 200, 10 and the last %d bytes", code, off, len(b), len(whole)-10)
	}
	if code, off, b := get("offset=99999999"); code != http.StatusOK || off != strconv.Itoa(len(whole)) || b != "" {
		t.Errorf("offset past the end: %d, header %q, %q; want 200, %d, nothing", code, off, b, len(whole))
	}
	for _, bad := range []string{"offset=-1", "offset=ten"} {
		if code, _, _ := get(bad); code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", bad, code)
		}
	}
}
