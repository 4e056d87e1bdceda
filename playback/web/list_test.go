package web_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sshward/sshward/playback/web/webtest"
)

// TestListSaysWhenCut is issue 9's "Listing says when it is cut" in the web
// UI, in real Chromium against a real playback server holding more sessions
// than a page: the list says how many it shows of how many match, and
// "Show more" appends the rest, each session once.
func TestListSaysWhenCut(t *testing.T) {
	const total = 105
	st := webtest.New(t)
	var sessions []webtest.Session
	for i := range total {
		sessions = append(sessions, webtest.Session{ID: fmt.Sprintf("s-list-%03d", i), User: "pat", Tier: "staging"})
	}
	st.RecordMany(t, sessions)

	b := newBrowser(t, 2*time.Minute)
	b.do(t, "open", chromedp.Navigate(st.URL+"/"))
	b.login(t, webtest.Auditor, webtest.Password, "")
	b.waitVisible(t, "#more")
	if got, want := b.text(t, "#more-text"), "Showing 100 of 105 sessions."; got != want {
		t.Errorf("the list says %q, want %q", got, want)
	}
	rows := func() int {
		n, err := chromedp.Run(b.ctx, chromedp.Evaluate[int](`document.querySelectorAll("tr.session-row").length`))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := rows(); n != 100 {
		t.Errorf("%d rows, want 100", n)
	}
	b.do(t, "show more", chromedp.Click(chromedp.CSS("#more-button")))
	if err := b.waitTrue(`document.querySelectorAll("tr.session-row").length === 105 && document.getElementById("more").hidden`,
		50*time.Millisecond, 30*time.Second); err != nil {
		t.Fatalf("after Show more: %d rows, more shown: %v (%v)", rows(), b.text(t, "#more"), err)
	}
	ids, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("tr.session-row")).map(r => r.dataset.id)`))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Errorf("%s listed twice", id)
		}
		seen[id] = true
	}
	if len(seen) != total {
		t.Errorf("%d different sessions listed, want %d", len(seen), total)
	}
}
