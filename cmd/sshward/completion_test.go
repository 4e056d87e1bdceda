package main

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestCompletionAndManFromHelp: the bash completion script, run by a real
// bash, completes verbs and each verb's flags; every flag that `sshward
// VERB --help` lists is offered, so the script cannot drift from the
// command. The man page renders with groff without a warning and shows
// every verb and flag.
func TestCompletionAndManFromHelp(t *testing.T) {
	bin := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", bin+"/", "github.com/sshward/sshward/cmd/sshward").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	sw := filepath.Join(bin, "sshward")
	script, err := exec.Command(sw, "completion", "bash").Output()
	if err != nil {
		t.Fatal(err)
	}
	complete := func(words ...string) []string {
		t.Helper()
		line := `source /dev/stdin; COMP_WORDS=(` + strings.Join(words, " ") + `); COMP_CWORD=` + strconv.Itoa(len(words)-1) +
			`; _sshward; printf '%s\n' "${COMPREPLY[@]}"`
		c := exec.Command("bash", "--norc", "-c", line)
		c.Stdin = strings.NewReader(string(script))
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		return strings.Fields(string(out))
	}
	if got := complete("sshward", "ce"); strings.Join(got, " ") != "cert" {
		t.Errorf("sshward ce<TAB> = %q", got)
	}
	if got := complete("sshward", "se"); strings.Join(got, " ") != "sessions" {
		t.Errorf("sshward se<TAB> = %q", got)
	}
	if got := complete("sshward", "sessions", "--li"); strings.Join(got, " ") != "--limit --live" {
		t.Errorf("sshward sessions --li<TAB> = %q", got)
	}
	if got := complete("sshward", "cert", "--tier", "prod"); len(got) != 0 {
		t.Errorf("a flag's value completed as a flag: %q", got)
	}

	usageOut, err := exec.Command(sw, "--help").Output()
	if err != nil {
		t.Fatal(err)
	}
	verbs := strings.Fields(strings.Join(complete("sshward", ""), " "))
	for _, verb := range []string{"login", "cert", "ssh-config", "request", "approve", "sessions", "play", "export", "completion", "man"} {
		if !strings.Contains(" "+strings.Join(verbs, " ")+" ", " "+verb+" ") {
			t.Errorf("verb %s not completed (verbs %q)", verb, verbs)
		}
	}
	man, err := exec.Command(sw, "man").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, verb := range verbs {
		help, err := exec.Command(sw, verb, "--help").Output()
		if err != nil {
			t.Fatalf("%s --help: %v", verb, err)
		}
		offered := " " + strings.Join(complete("sshward", verb, "-"), " ") + " "
		for _, line := range strings.Split(string(help), "\n") {
			if !strings.HasPrefix(line, "  -") {
				continue
			}
			flag := "--" + strings.Fields(line)[0][1:]
			if !strings.Contains(offered, " "+flag+" ") {
				t.Errorf("sshward %s %s is not completed", verb, flag)
			}
			if !strings.Contains(string(man), `\-\-`+strings.ReplaceAll(flag[2:], "-", `\-`)) {
				t.Errorf("the man page lacks sshward %s %s", verb, flag)
			}
		}
	}
	if !strings.Contains(string(usageOut), "sshward completion bash|zsh") {
		t.Error("--help does not name the completion verb")
	}
	if _, err := exec.LookPath("groff"); err != nil {
		t.Log("groff not installed: the man page's rendering is not checked")
	} else {
		c := exec.Command("groff", "-man", "-ww", "-z")
		c.Stdin = strings.NewReader(string(man))
		if out, err := c.CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("groff warns about the man page: %v\n%s", err, out)
		}
	}
	zsh, err := exec.Command(sw, "completion", "zsh").Output()
	if err != nil || !strings.HasPrefix(string(zsh), "#compdef sshward\n") || !strings.Contains(string(zsh), "'--limit[") {
		t.Errorf("zsh completion: %v\n%s", err, zsh)
	}
	if _, err := exec.LookPath("zsh"); err == nil {
		if out, err := exec.Command("zsh", "-n", "-c", string(zsh)).CombinedOutput(); err != nil {
			t.Errorf("zsh -n: %v\n%s", err, out)
		}
	} else {
		t.Log("zsh not installed: the zsh script's syntax is not checked")
	}
}
