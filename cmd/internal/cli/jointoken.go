package cli

import (
	"fmt"
	"os"
	"strings"
)

// JoinToken returns the one-time join token from, in this order, the
// --join-token value, the file named by --join-token-file, or the
// SSHWARD_JOIN_TOKEN environment variable. A file or the environment keeps
// the token off command lines, where ps and shell history would show it.
func JoinToken(value, file string, getenv func(string) string) (string, error) {
	if value != "" && file != "" {
		return "", Usagef("give --join-token or --join-token-file, not both")
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read the join token file: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("the join token file %s is empty", file)
		}
		return tok, nil
	}
	if value != "" {
		return value, nil
	}
	return strings.TrimSpace(getenv("SSHWARD_JOIN_TOKEN")), nil
}
