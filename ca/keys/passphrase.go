package keys

import (
	"bytes"
	"errors"
	"fmt"
)

// maxPassphraseFileSize bounds --passphrase-file; a passphrase is one line.
const maxPassphraseFileSize = 4 << 10

// ReadPassphrase returns the CA passphrase from env (the value of
// SSHWARD_CA_PASSPHRASE, which the caller looks up) or from file (the
// --passphrase-file path). Exactly one must be set. The file must not be
// accessible by group or others (the error says to chmod 600). One trailing
// newline ("\n" or "\r\n") is trimmed, as `echo secret > file` adds one. An
// empty passphrase is an error.
func ReadPassphrase(env string, file string) ([]byte, error) {
	var pass []byte
	switch {
	case env != "" && file != "":
		return nil, errors.New("keys: read passphrase: both SSHWARD_CA_PASSPHRASE and --passphrase-file are set: use one")
	case file != "":
		data, err := readSecretFile(file, maxPassphraseFileSize)
		if err != nil {
			return nil, fmt.Errorf("keys: read passphrase file %s: %w", file, err)
		}
		pass = data
	case env != "":
		pass = []byte(env)
	default:
		return nil, fmt.Errorf("keys: read passphrase: %w: set SSHWARD_CA_PASSPHRASE or pass --passphrase-file", ErrNoPassphrase)
	}
	if bytes.HasSuffix(pass, []byte("\r\n")) {
		pass = pass[:len(pass)-2]
	} else if bytes.HasSuffix(pass, []byte("\n")) {
		pass = pass[:len(pass)-1]
	}
	if len(pass) == 0 {
		return nil, fmt.Errorf("keys: read passphrase: %w: the passphrase is empty", ErrNoPassphrase)
	}
	return pass, nil
}
