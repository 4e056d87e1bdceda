package web_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's chromium; `make test` installs it (.ci/deps).
const chromiumPath = "/usr/bin/chromium"

// browser is one headless Chromium for a test, with the console collected so
// a test can show (and assert on) what the page complained about.
type browser struct {
	ctx context.Context

	mu      sync.Mutex // guards console
	console []chromedp.ConsoleMessage
}

// newBrowser starts headless Chromium with the flags that work as root in a
// container (NOTES.md "Web player and browser tests") and closes it when the
// test ends. The profile and TMPDIR live in the test's temporary directory,
// so a run leaves nothing in /tmp. Certificate errors are ignored because
// the playback server's TLS certificate comes from the test CA's private
// root, which this throwaway profile does not know.
func newBrowser(t testing.TB, timeout time.Duration) *browser {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s is missing: install the chromium package (apt-get install -y chromium)", chromiumPath)
	}
	dir := t.TempDir()
	// Not under t.TempDir(): Chromium puts a unix socket in TMPDIR, and
	// a test's long name would make its path exceed the 108-byte limit.
	tmp, err := os.MkdirTemp("", "sshward-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.IgnoreCertErrors,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(filepath.Join(dir, "profile")),
		chromedp.Env("TMPDIR="+tmp),
	)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, timeout)
	b := &browser{ctx: ctx}
	// Start the browser and the tab now, so the console is read from the
	// first page on.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		cancelTimeout()
		cancelCtx()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for msg, err := range chromedp.Console(ctx) {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.console = append(b.console, msg)
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		// Every page a test opens must live within the CSP: a violation
		// means something the page needs is blocked (or was inlined).
		if v := b.cspViolations(); len(v) > 0 {
			t.Errorf("Content-Security-Policy violations:\n%s", strings.Join(v, "\n"))
		}
		if t.Failed() {
			for _, m := range b.messages() {
				t.Logf("browser console: %s: %s", m.Type, m.Text)
			}
		}
		cancelTimeout()
		cancelCtx()
		cancelAlloc()
		<-done
	})
	return b
}

func (b *browser) messages() []chromedp.ConsoleMessage {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]chromedp.ConsoleMessage(nil), b.console...)
}

// cspViolations returns the console lines in which the browser refused
// something because of the Content-Security-Policy.
func (b *browser) cspViolations() []string {
	var out []string
	for _, m := range b.messages() {
		if strings.Contains(m.Text, "Content Security Policy") || strings.Contains(m.Text, "Content-Security-Policy") {
			out = append(out, m.Text)
		}
	}
	return out
}

// terminalTextJS is the player's screen as text, one row per line.
// asciinema-player 3.17 draws rows as pre.ap-term-text > span.ap-line;
// textContent keeps a row whole where innerText would split it at colour
// changes (NOTES.md).
const terminalTextJS = `Array.from(document.querySelectorAll("pre.ap-term-text > span.ap-line")).map(l => l.textContent).join("\n")`

// waitTerminal polls until the player's screen contains want and returns
// the screen. It polls from Go rather than in the page so that it survives a
// navigation that is still under way when it starts.
func (b *browser) waitTerminal(t testing.TB, want string, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	var screen string
	var err error
	for time.Now().Before(deadline) {
		screen, err = chromedp.Run(b.ctx, chromedp.Evaluate[string](terminalTextJS))
		if err == nil && strings.Contains(screen, want) {
			return screen
		}
		if b.ctx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	status, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`(document.getElementById("status") || {}).textContent || ""`))
	t.Fatalf("the player never showed %q (last error: %v)\nscreen:\n%s\nstatus: %s", want, err, strings.TrimRight(screen, " \n"), status)
	return ""
}

// waitTrue evaluates js every interval until it is true. It polls from Go
// so that it survives the navigation it may start during.
func (b *browser) waitTrue(js string, interval, within time.Duration) error {
	deadline := time.Now().Add(within)
	var err error
	for time.Now().Before(deadline) && b.ctx.Err() == nil {
		var ok bool
		if ok, err = chromedp.Run(b.ctx, chromedp.Evaluate[bool](js)); err == nil && ok {
			return nil
		}
		time.Sleep(interval)
	}
	if err == nil {
		err = errors.New("timed out")
	}
	return fmt.Errorf("wait for %s: %w", js, err)
}

// text returns the textContent of the first element matching css.
func (b *browser) text(t testing.TB, css string) string {
	t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.TextContent(chromedp.CSS(css)))
	if err != nil {
		t.Fatalf("read %s: %v", css, err)
	}
	return s
}

// waitVisible waits for css to be visible.
func (b *browser) waitVisible(t testing.TB, css string) {
	t.Helper()
	if err := chromedp.Do(b.ctx, chromedp.WaitVisible(chromedp.CSS(css))); err != nil {
		t.Fatalf("wait for %s: %v", css, err)
	}
}

// do runs steps and fails the test on error.
func (b *browser) do(t testing.TB, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// login fills the login form on the current page and submits it.
func (b *browser) login(t testing.TB, user, password, otp string) {
	t.Helper()
	b.do(t, "log in as "+user,
		chromedp.WaitVisible(chromedp.CSS("#login")),
		chromedp.SendKeys(chromedp.CSS("#login-user"), user),
		chromedp.SendKeys(chromedp.CSS("#login-password"), password),
		chromedp.SendKeys(chromedp.CSS("#login-otp"), otp),
		chromedp.Click(chromedp.CSS("#login-submit")),
	)
}
