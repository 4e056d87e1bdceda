package recorder

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Session kinds (Metadata.Kind), after the SSH channel request that started
// the session (RFC 4254 section 6.5).
const (
	KindShell     = "shell"
	KindExec      = "exec"
	KindSubsystem = "subsystem"
)

// Metadata describes one recording; it is stored as DIR/<session_id>.json
// beside the cast. The caller fills the identity and session fields before
// Create; the spool owns the rest (counts, digest, End, Complete, Finished).
type Metadata struct {
	SessionID  string   `json:"session_id"`
	Identity   string   `json:"identity"` // who the CA issued the certificate to
	Principal  string   `json:"principal"`
	KeyID      string   `json:"key_id"`
	Serial     uint64   `json:"serial"`
	Tier       string   `json:"tier"`
	Host       string   `json:"host"`
	ClientAddr string   `json:"client_addr"`
	RequestID  string   `json:"request_id,omitempty"` // access request, for break-glass
	Reason     string   `json:"reason,omitempty"`     // the request's reason
	Approvers  []string `json:"approvers,omitempty"`
	// UserCert is the user's certificate (authorized_keys format) that
	// opened the session: the playback server checks it against the tier's
	// user CA and the identity, principal, serial, key id and request fields
	// above against it, so a host cannot claim another person or request.
	UserCert string `json:"user_cert,omitempty"`

	Kind        string `json:"kind"`              // KindShell, KindExec or KindSubsystem
	Command     string `json:"command,omitempty"` // exec command or subsystem name
	RecordInput bool   `json:"record_input"`      // the tier records input; Recording.Input is a no-op otherwise
	// OutputNewlines is how line feeds in the output appear in the cast:
	// "" as sent (a terminal session: the terminal already sent CR LF), or
	// NewlinesCRLF (a session without a terminal: every LF is recorded as
	// CR LF, as a terminal with onlcr shows it, so players draw lines, not
	// a staircase). ExactOutput undoes it.
	OutputNewlines string `json:"output_newlines,omitempty"`
	// BulkKeepBytes is the tier's bulk_output cap: how many bytes of the
	// side blob (blob.go) are kept; 0 keeps all. Set by the caller.
	BulkKeepBytes int64 `json:"bulk_keep_bytes,omitempty"`

	Start      time.Time `json:"start"` // zero means the spool's Now at Create
	End        time.Time `json:"end,omitzero"`
	ExitStatus *int      `json:"exit_status,omitempty"`
	ExitSignal string    `json:"exit_signal,omitempty"` // without "SIG", as in RFC 4254 section 6.10
	EndReason  string    `json:"end_reason,omitempty"`  // why the agent ended the session, if it did
	// Flags are the names of the suspicious-activity rules the session
	// raised (issue 13 §2; each hit is also a "flag …" marker in the cast),
	// from EndInfo.Flags.
	Flags []string `json:"flags,omitempty"`

	// Set by the spool. BytesOut and BytesIn count raw session bytes given to
	// Output and Input; after a crash repair they are recounted from the cast
	// (UTF-8 as recorded). CastBytes is the cast file's size, SHA256 its
	// digest (hex).
	BytesOut  int64  `json:"bytes_out"`
	BytesIn   int64  `json:"bytes_in"`
	CastBytes int64  `json:"cast_bytes"`
	SHA256    string `json:"sha256,omitempty"`
	// Blob is the side blob of output the cast cannot hold (blob.go): nil
	// when the session sent none.
	Blob *BlobInfo `json:"blob,omitempty"`

	// Complete is true when every byte of the session reached the cast;
	// otherwise Incomplete says why not. Finished is true once the cast will
	// not change again (closed or repaired): only then may it be shipped.
	Complete   bool   `json:"complete"`
	Incomplete string `json:"incomplete,omitempty"`
	Finished   bool   `json:"finished"`
}

// Check reports the first field that Create would refuse.
func (m Metadata) Check() error {
	if err := CheckSessionID(m.SessionID); err != nil {
		return err
	}
	switch m.Kind {
	case KindShell, KindExec, KindSubsystem:
	default:
		return fmt.Errorf("recorder: metadata: kind %q is not shell, exec or subsystem", m.Kind)
	}
	if m.BulkKeepBytes < 0 {
		return fmt.Errorf("recorder: metadata: bulk_keep_bytes %d is negative", m.BulkKeepBytes)
	}
	if m.OutputNewlines != "" && m.OutputNewlines != NewlinesCRLF {
		return fmt.Errorf("recorder: metadata: output_newlines %q is not %q or empty", m.OutputNewlines, NewlinesCRLF)
	}
	return nil
}

// NewlinesCRLF is Metadata.OutputNewlines of a session without a terminal.
const NewlinesCRLF = "crlf"

// ExactOutput returns the output bytes a session sent, from the output
// data of its cast (the concatenated "o" events): for a recording with
// OutputNewlines NewlinesCRLF it removes the CR the recorder put before
// each LF, which is exact since every LF got one. Bytes that were not
// valid UTF-8 were recorded as U+FFFD and stay so.
func ExactOutput(m Metadata, castOutput []byte) []byte {
	if m.OutputNewlines != NewlinesCRLF {
		return castOutput
	}
	return bytes.ReplaceAll(castOutput, []byte("\r\n"), []byte("\n"))
}

// maxSessionID bounds a session id, far below file name limits.
const maxSessionID = 128

// CheckSessionID reports whether id can name files in the spool: 1 to 128
// bytes of ASCII letters, digits, '.', '_' and '-', starting with a letter or
// digit (so never ".", ".." or a hidden file).
func CheckSessionID(id string) error {
	ok := len(id) > 0 && len(id) <= maxSessionID
	for i := 0; ok && i < len(id); i++ {
		c := id[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		ok = alnum || i > 0 && (c == '.' || c == '_' || c == '-')
	}
	if !ok {
		return fmt.Errorf("recorder: session id %q: %w", id, ErrInvalidSessionID)
	}
	return nil
}

// startMarker is the label of the marker Create writes first:
//
//	session start user=alice principal=root key_id=alice@laptop serial=7 tier=production from=192.0.2.1:50022 kind=shell [command=…] [request=… reason=… approvers=bob,carol]
func startMarker(m Metadata) string {
	var b strings.Builder
	b.WriteString("session start")
	kv(&b, "user", m.Identity)
	kv(&b, "principal", m.Principal)
	kv(&b, "key_id", m.KeyID)
	kv(&b, "serial", strconv.FormatUint(m.Serial, 10))
	kv(&b, "tier", m.Tier)
	kv(&b, "from", m.ClientAddr)
	kv(&b, "kind", m.Kind)
	if m.Command != "" {
		kv(&b, "command", m.Command)
	}
	if m.RequestID != "" {
		kv(&b, "request", m.RequestID)
		kv(&b, "reason", m.Reason)
	}
	if len(m.Approvers) > 0 {
		kv(&b, "approvers", strings.Join(m.Approvers, ","))
	}
	return truncateLabel(b.String())
}

// EndInfo is how a session ended, given to Recording.Close.
type EndInfo struct {
	ExitStatus *int     // exit-status, if the process exited
	ExitSignal string   // exit-signal name without "SIG", if it was killed
	Reason     string   // why the agent ended the session ("certificate expired"), if it did
	Flags      []string // suspicious-activity rules raised (Metadata.Flags)
}

// endMarker is the label of the marker Close writes last:
//
//	session end status=0 | session end signal=KILL [reason="certificate expired"]
func endMarker(e EndInfo) string {
	var b strings.Builder
	b.WriteString("session end")
	if e.ExitStatus != nil {
		kv(&b, "status", strconv.Itoa(*e.ExitStatus))
	}
	if e.ExitSignal != "" {
		kv(&b, "signal", e.ExitSignal)
	}
	if e.Reason != "" {
		kv(&b, "reason", e.Reason)
	}
	return truncateLabel(b.String())
}

// kv appends " key=value", quoting value (Go syntax) when it is empty or
// holds anything that would make the label ambiguous to read back.
func kv(b *strings.Builder, key, value string) {
	b.WriteByte(' ')
	b.WriteString(key)
	b.WriteByte('=')
	plain := value != ""
	for _, r := range value {
		if r <= ' ' || r == '"' || r == '=' || r == '\\' || r == 0x7f || !strconv.IsPrint(r) {
			plain = false
			break
		}
	}
	if plain {
		b.WriteString(value)
	} else {
		b.WriteString(strconv.Quote(value))
	}
}

// truncateLabel keeps a label within maxMarker bytes: identity fields come
// from certificates and requests, and a marker must never fail for length.
func truncateLabel(s string) string {
	if len(s) <= maxMarker {
		return s
	}
	s = s[:maxMarker-len("…")]
	return strings.ToValidUTF8(s, "") + "…"
}

func readMetadata(path string) (Metadata, error) {
	var m Metadata
	data, err := os.ReadFile(path)
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("decode %s: %w", path, err)
	}
	return m, nil
}

func marshalMetadata(m Metadata) ([]byte, error) {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode metadata: %w", err)
	}
	return append(data, '\n'), nil
}

// ParseMarker reads the key=value fields of a start or end marker label
// (values as kv writes them: bare, or Go-quoted). ok is false for a label
// that is not of that form. The playback server uses it to make the exec
// command of a session searchable.
func ParseMarker(label string) (fields map[string]string, ok bool) {
	var rest string
	switch {
	case strings.HasPrefix(label, "session start"):
		rest = label[len("session start"):]
	case strings.HasPrefix(label, "session end"):
		rest = label[len("session end"):]
	default:
		return nil, false
	}
	fields = map[string]string{}
	for rest != "" {
		if rest[0] != ' ' {
			return nil, false
		}
		rest = rest[1:]
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 {
			return nil, false
		}
		key := rest[:eq]
		rest = rest[eq+1:]
		var val string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return nil, false
			}
			if val, err = strconv.Unquote(q); err != nil {
				return nil, false
			}
			rest = rest[len(q):]
		} else {
			end := strings.IndexByte(rest, ' ')
			if end < 0 {
				end = len(rest)
			}
			val, rest = rest[:end], rest[end:]
		}
		fields[key] = val
	}
	return fields, true
}
