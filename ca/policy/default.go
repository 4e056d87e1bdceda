package policy

import _ "embed"

//go:embed default.yaml
var defaultPolicy []byte

// Default returns the policy `sshward-ca init` writes: tiers staging,
// production and break-glass for the groups engineers, sre, oncall and
// incident-commanders, with comments. The caller gets its own copy.
func Default() []byte {
	return append([]byte(nil), defaultPolicy...)
}
