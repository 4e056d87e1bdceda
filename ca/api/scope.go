package api

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Need-to-know scope (issue 12 §3). A request or certificate may be scoped
// to host names (any of them) and host labels (all of them). The scope
// travels in the certificate as the critical option CritScope, so:
//
//   - the sshward agent admits the certificate only on a host whose name is
//     listed (when hosts are given) and whose labels include every label
//     given (agent Config.Labels);
//   - a stock OpenSSH sshd does not know the option and refuses the
//     certificate (PROTOCOL.certkeys: unknown critical options fail), which
//     is the safe default for hosts that cannot check the scope.
//
// Value: items separated by ',': "host=NAME" or "label=KEY:VALUE", sorted,
// e.g. "host=db1.example.com,label=app:billing".
const CritScope = "scope@sshward"

// Limits of a scope.
const (
	MaxScopeLabels    = 16
	maxLabelKeyBytes  = 63
	maxLabelValueByte = 63
)

// Scope limits where a certificate may be used. The zero Scope is
// unscoped (any host of the tier).
type Scope struct {
	Hosts  []string          `json:"hosts,omitempty"`  // any of these host names
	Labels map[string]string `json:"labels,omitempty"` // every one of these labels
}

// IsZero reports an unscoped Scope.
func (s Scope) IsZero() bool { return len(s.Hosts) == 0 && len(s.Labels) == 0 }

// Normalize validates s and returns it with host names lowercased, sorted
// and deduplicated.
func (s Scope) Normalize() (Scope, error) {
	hosts, err := CheckHostnames(s.Hosts)
	if err != nil {
		return Scope{}, err
	}
	slices.Sort(hosts)
	if err := CheckLabels(s.Labels); err != nil {
		return Scope{}, err
	}
	out := Scope{Hosts: hosts}
	if len(s.Labels) > 0 {
		out.Labels = maps.Clone(s.Labels)
	}
	return out, nil
}

// Equal reports whether s and o name the same hosts and labels (both
// normalized).
func (s Scope) Equal(o Scope) bool {
	return slices.Equal(s.Hosts, o.Hosts) && maps.Equal(s.Labels, o.Labels)
}

// Encode is the CritScope value of a normalized s ("" when unscoped).
func (s Scope) Encode() string {
	items := make([]string, 0, len(s.Hosts)+len(s.Labels))
	for _, h := range s.Hosts {
		items = append(items, "host="+h)
	}
	for _, k := range slices.Sorted(maps.Keys(s.Labels)) {
		items = append(items, "label="+k+":"+s.Labels[k])
	}
	return strings.Join(items, ",")
}

// String is s for people: "hosts db1, db2; labels app=billing", or
// "any host" when unscoped.
func (s Scope) String() string {
	if s.IsZero() {
		return "any host"
	}
	var parts []string
	if len(s.Hosts) > 0 {
		parts = append(parts, "hosts "+strings.Join(s.Hosts, ", "))
	}
	if len(s.Labels) > 0 {
		ls := make([]string, 0, len(s.Labels))
		for _, k := range slices.Sorted(maps.Keys(s.Labels)) {
			ls = append(ls, k+"="+s.Labels[k])
		}
		parts = append(parts, "labels "+strings.Join(ls, ", "))
	}
	return strings.Join(parts, "; ")
}

// ErrBadScope: a CritScope value that does not parse. An agent refuses
// such a certificate.
var ErrBadScope = errors.New("api: bad scope@sshward value")

// ParseScope reads a CritScope value. Anything it does not understand is
// an error (wrapping ErrBadScope), never a wider scope; an empty value
// names no host and is refused too.
func ParseScope(v string) (Scope, error) {
	if v == "" {
		return Scope{}, fmt.Errorf("%w: empty", ErrBadScope)
	}
	var s Scope
	for _, it := range strings.Split(v, ",") {
		kind, val, ok := strings.Cut(it, "=")
		if !ok {
			return Scope{}, fmt.Errorf("%w: item %q", ErrBadScope, short(it))
		}
		switch kind {
		case "host":
			s.Hosts = append(s.Hosts, val)
		case "label":
			k, lv, ok := strings.Cut(val, ":")
			if !ok {
				return Scope{}, fmt.Errorf("%w: label %q has no value", ErrBadScope, short(val))
			}
			if s.Labels == nil {
				s.Labels = map[string]string{}
			}
			if _, dup := s.Labels[k]; dup {
				return Scope{}, fmt.Errorf("%w: label %q twice", ErrBadScope, short(k))
			}
			s.Labels[k] = lv
		default:
			return Scope{}, fmt.Errorf("%w: unknown item %q", ErrBadScope, short(kind))
		}
	}
	n, err := s.Normalize()
	if err != nil {
		return Scope{}, fmt.Errorf("%w: %w", ErrBadScope, err)
	}
	return n, nil
}

// Admits reports whether a host called by any of names, with labels,
// is inside s: one of its names is listed (when s lists hosts) and it
// carries every label of s with the same value. Names compare without
// case.
func (s Scope) Admits(names []string, labels map[string]string) bool {
	if len(s.Hosts) > 0 && !slices.ContainsFunc(names, func(n string) bool {
		return slices.Contains(s.Hosts, strings.ToLower(n))
	}) {
		return false
	}
	for k, v := range s.Labels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// ParseLabel reads "key=value" (a --label flag).
func ParseLabel(s string) (key, value string, err error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return "", "", fmt.Errorf("label %q must be key=value, e.g. app=billing", short(s))
	}
	if err := checkLabel(k, v); err != nil {
		return "", "", err
	}
	return k, v, nil
}

// ParseLabels reads --label flags into a map; a key given twice is an error.
func ParseLabels(list []string) (map[string]string, error) {
	if len(list) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, s := range list {
		k, v, err := ParseLabel(s)
		if err != nil {
			return nil, err
		}
		if old, dup := out[k]; dup && old != v {
			return nil, fmt.Errorf("label %s given twice (%s and %s): a host has one value per label", k, old, v)
		}
		out[k] = v
	}
	return out, CheckLabels(out)
}

// CheckLabels validates host labels: at most MaxScopeLabels; keys and
// values 1-63 of letters, digits, '.', '_' and '-' (keys start with a
// letter).
func CheckLabels(labels map[string]string) error {
	if len(labels) > MaxScopeLabels {
		return fmt.Errorf("at most %d labels", MaxScopeLabels)
	}
	for k, v := range labels {
		if err := checkLabel(k, v); err != nil {
			return err
		}
	}
	return nil
}

func checkLabel(k, v string) error {
	if !labelToken(k, maxLabelKeyBytes) || !(k[0] >= 'a' && k[0] <= 'z' || k[0] >= 'A' && k[0] <= 'Z') {
		return fmt.Errorf("label key %q must be 1-%d letters, digits, '.', '_' or '-', starting with a letter", short(k), maxLabelKeyBytes)
	}
	if !labelToken(v, maxLabelValueByte) {
		return fmt.Errorf("label %s: value %q must be 1-%d letters, digits, '.', '_' or '-'", k, short(v), maxLabelValueByte)
	}
	return nil
}

func labelToken(s string, n int) bool {
	if s == "" || len(s) > n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
