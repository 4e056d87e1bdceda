package web_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sshward/sshward/playback/web/webtest"
)

// TestLiveFollowSurvivesRestart is issue 9's "Live follow says why it
// stopped", in real headless Chromium against a real playback server: an
// auditor follows a live session; the server stops as a restart stops it
// (listener closed, the follow stream ended) while the session goes on. The
// page must say the connection was lost and that it reconnects (not that
// the session ended), then, once the server is back on the same port, show
// what was printed meanwhile and after, each line once, and say the
// session ended only when it did.
func TestLiveFollowSurvivesRestart(t *testing.T) {
	st := webtest.New(t)
	lines := func(from, to int) []webtest.Step {
		var steps []webtest.Step
		for i := from; i <= to; i++ {
			steps = append(steps, webtest.Step{After: 10 * time.Millisecond, Output: fmt.Sprintf("line-%03d\r\n", i)})
		}
		return steps
	}
	live := st.StartLive(t, webtest.Session{ID: "s-restart", User: "dave", Steps: lines(1, 3)})

	b := newBrowser(t, 2*time.Minute)
	b.do(t, "open", chromedp.Navigate(st.URL+"/"))
	b.login(t, webtest.Auditor, webtest.Password, "")
	b.waitVisible(t, "tr.session-row")
	b.do(t, "open the live session", chromedp.Navigate(st.URL+"/session/s-restart"))
	b.waitTerminal(t, "line-003", 30*time.Second)

	st.StopServer(t)
	const statusJS = `document.getElementById("status").textContent`
	if err := b.waitTrue(statusJS+`.includes("lost") && `+statusJS+`.includes("reconnecting")`, 50*time.Millisecond, 30*time.Second); err != nil {
		t.Fatalf("the page never said the connection was lost: %v (status %q)", err, b.text(t, "#status"))
	}
	if s := b.text(t, "#status"); strings.Contains(s, "ended") {
		t.Errorf("status %q says the session ended while the server restarts", s)
	}
	live.Add(t, lines(4, 8)...) // while the server is away
	st.StartServer(t)
	b.waitTerminal(t, "line-008", 30*time.Second)
	if err := b.waitTrue(statusJS+`.includes("Reconnected")`, 50*time.Millisecond, 30*time.Second); err != nil {
		t.Errorf("the page never said it reconnected: %v (status %q)", err, b.text(t, "#status"))
	}
	live.Add(t, lines(9, 12)...)
	screen := b.waitTerminal(t, "line-012", 30*time.Second)
	for i := 1; i <= 12; i++ {
		if n := strings.Count(screen, fmt.Sprintf("line-%03d", i)); n != 1 {
			t.Errorf("line-%03d is on the screen %d times, want once:\n%s", i, n, screen)
		}
	}
	live.Finish(t)
	if err := b.waitTrue(statusJS+`.includes("ended")`, 50*time.Millisecond, 30*time.Second); err != nil {
		t.Errorf("the page never said the session ended: %v (status %q)", err, b.text(t, "#status"))
	}
}
