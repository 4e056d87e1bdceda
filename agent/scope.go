package agent

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/sshward/sshward/ca/api"
)

// Need-to-know scope (issue 12 §3): a certificate carrying the critical
// option api.CritScope is admitted only on a host inside the scope: one
// of the host certificate's principals is listed when
// the scope names hosts, and Config.Labels has every label of the scope.
// A value that does not parse is refused: never read as a wider scope.

// Refusal reasons of the scope (logged and audited).
const (
	reasonOutOfScope = "this host is outside the certificate's scope (scope@sshward)"
	reasonBadScope   = "the certificate's scope (scope@sshward) cannot be read"
)

// checkScope returns a refusal reason and detail when cert is scoped and
// this host is outside the scope.
func (s *Server) checkScope(cert *ssh.Certificate) (reason, detail string) {
	v, ok := cert.CriticalOptions[api.CritScope]
	if !ok {
		return "", ""
	}
	sc, err := api.ParseScope(v)
	if err != nil {
		return reasonBadScope, oneLine(err.Error())
	}
	if !sc.Admits(s.hostNames(), s.cfg.Labels) {
		return reasonOutOfScope, fmt.Sprintf("scope=%q host=%s labels=%s", sc.String(), s.thisHost(), labelString(s.cfg.Labels))
	}
	return "", ""
}

// hostNames are the names this host answers to as the CA attested them:
// its host certificate's principals (not the configurable HostName).
func (s *Server) hostNames() []string {
	return slices.Clone(s.identity().cert.ValidPrincipals)
}

// scopeBanner tells the user which scope the certificate has and that this
// host is outside it.
func (s *Server) scopeBanner(cert *ssh.Certificate) string {
	sc, err := api.ParseScope(cert.CriticalOptions[api.CritScope])
	if err != nil {
		return "sshward: access denied. This certificate's scope cannot be read: get a new one with `sshward cert`.\n"
	}
	return fmt.Sprintf("sshward: access denied. This certificate is scoped to %s, and this host (%s, labels %s) is outside that scope: get a certificate or access request scoped to this host (sshward cert|request --host %s).\n",
		oneLine(sc.String()), s.thisHost(), labelString(s.cfg.Labels), s.thisHost())
}

func labelString(l map[string]string) string {
	if len(l) == 0 {
		return "none"
	}
	out := make([]string, 0, len(l))
	for _, k := range slices.Sorted(maps.Keys(l)) {
		out = append(out, k+"="+l[k])
	}
	return strings.Join(out, ",")
}
