package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestJoinToken(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tok")
	if err := os.WriteFile(file, []byte("swj_fromfile\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	env := func(v string) func(string) string { return func(string) string { return v } }
	tests := []struct {
		name, value, file, env, want, wantErr string
	}{
		{name: "file", file: file, want: "swj_fromfile"},
		{name: "flag", value: "swj_flag", env: "swj_env", want: "swj_flag"},
		{name: "env", env: "swj_env\n", want: "swj_env"},
		{name: "none", want: ""},
		{name: "both", value: "swj_flag", file: file, wantErr: "not both"},
		{name: "missing file", file: filepath.Join(dir, "nope"), wantErr: "read the join token file"},
		{name: "empty file", file: empty, wantErr: "is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := JoinToken(tt.value, tt.file, env(tt.env))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "swj_") {
					t.Fatalf("the error shows the token: %v", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q %v, want %q", got, err, tt.want)
			}
		})
	}
}
