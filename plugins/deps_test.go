package plugins_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestPluginsLinkNoCACode: the plugin binaries that ship depend on the
// plugin contract, not on the CA (its store, keys, policy…) nor on the
// agent, recorder or playback server (STYLE.md: dependencies point
// downward). They used to link the whole CA, ~20 MB each.
func TestPluginsLinkNoCACode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps",
		"github.com/sshward/sshward/plugins/webhook/cmd/sshward-plugin-webhook",
		"github.com/sshward/sshward/plugins/oncall/cmd/sshward-plugin-oncall").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	var ours []string
	for _, pkg := range strings.Fields(string(out)) {
		rest, ok := strings.CutPrefix(pkg, "github.com/sshward/sshward/")
		if !ok {
			continue
		}
		ours = append(ours, rest)
		if !strings.HasPrefix(rest, "plugins") {
			t.Errorf("a plugin binary links %s", pkg)
		}
	}
	if len(ours) == 0 {
		t.Fatal("go list named none of our packages: the test checks nothing")
	}
}
