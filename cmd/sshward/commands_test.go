package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// testCommands: `sshward play ID --commands` prints the timeline: a typed
// command where input is recorded, a command after a prompt where it is
// not; --json gives the fields; an engineer is refused as for play.
func testCommands(t *testing.T, w *playbackWorld) {
	out, errOut, code := sshward(t, w.auditor, "play", "s-word", "--commands")
	if code != 0 || out != "0:01.1  cat /etc/motd\n" {
		t.Fatalf("typed timeline: %d %q %q", code, out, errOut)
	}
	out, errOut, code = sshward(t, w.auditor, "play", "s-quiet", "--commands", "--json")
	var cmds []struct {
		Time    float64 `json:"time"`
		Command string  `json:"command"`
		Source  string  `json:"source"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &cmds) != nil || len(cmds) != 1 || cmds[0].Command != "uptime" || cmds[0].Source != "prompt" {
		t.Fatalf("prompt timeline: %d %q %q", code, out, errOut)
	}
	if _, errOut, code := sshward(t, w.engineer, "play", "s-word", "--commands"); code != 1 || !strings.Contains(errOut, "only auditors") {
		t.Fatalf("engineer: %d %q", code, errOut)
	}
	if _, _, code := sshward(t, w.auditor, "play", "s-word", "--json"); code != 2 {
		t.Fatalf("--json without --commands: exit %d, want 2 (usage)", code)
	}
}
