package keys

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadPassphrase(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string, perm os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), perm); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, perm); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name      string
		env, file string
		want      string // passphrase on success
		err       error  // errors.Is target
		text      string // substring of the error
	}{
		{name: "env", env: "from env", want: "from env"},
		{name: "env keeps inner spaces", env: " a b ", want: " a b "},
		{name: "file trims one newline", file: file("nl", "from file\n", 0o600), want: "from file"},
		{name: "file trims one CRLF", file: file("crlf", "from file\r\n", 0o600), want: "from file"},
		{name: "file trims only one newline", file: file("two", "pw\n\n", 0o600), want: "pw\n"},
		{name: "file 0400", file: file("ro", "pw", 0o400), want: "pw"},
		{name: "group-readable file", file: file("group", "pw\n", 0o640), err: ErrInsecureFile, text: "chmod 600"},
		{name: "world-readable file", file: file("world", "pw\n", 0o604), err: ErrInsecureFile, text: "chmod 600"},
		{name: "empty file", file: file("empty", "\n", 0o600), err: ErrNoPassphrase, text: "empty"},
		{name: "env only a newline", env: "\n", err: ErrNoPassphrase, text: "empty"},
		{name: "missing file", file: filepath.Join(dir, "nope"), err: os.ErrNotExist},
		{name: "directory", file: dir, text: "regular file"},
		{name: "neither", err: ErrNoPassphrase, text: "SSHWARD_CA_PASSPHRASE"},
		{name: "both", env: "a", file: file("both", "b", 0o600), text: "use one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadPassphrase(tt.env, tt.file)
			if tt.err == nil && tt.text == "" {
				if err != nil {
					t.Fatalf("ReadPassphrase: %v", err)
				}
				if string(got) != tt.want {
					t.Fatalf("passphrase %q, want %q", got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, got %q", got)
			}
			if tt.err != nil && !errors.Is(err, tt.err) {
				t.Errorf("err = %v, want %v", err, tt.err)
			}
			if !strings.Contains(err.Error(), tt.text) {
				t.Errorf("err = %q, want %q in it", err, tt.text)
			}
			if strings.Contains(err.Error(), "pw") {
				t.Errorf("err = %q echoes the passphrase", err)
			}
		})
	}
}
