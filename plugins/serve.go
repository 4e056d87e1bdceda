package plugins

import (
	"context"
	"io"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-plugin"

	"github.com/sshward/sshward/plugins/contract"
)

// Notifier is the contract of a notifier plugin: it receives every audit
// event, in Seq order, at least once. Delivery is at-least-once (a crash
// between delivery and the host recording it repeats the event), so an
// implementation that must not act twice dedupes on ev.Seq (with ev.Hash
// it can also keep its own copy of the audit chain's head).
//
// Notify returning an error means "not delivered": the host retries the
// same event later and never skips it. ctx carries the host's deadline and
// cancellation across the process boundary.
type Notifier interface {
	Notify(ctx context.Context, ev contract.AuditEvent) error
}

// ServeNotifier serves n as a notifier plugin over go-plugin's gRPC
// transport and returns when the host stops the plugin. It is all a
// plugin's main needs after reading its configuration:
//
//	func main() { plugins.ServeNotifier(myNotifier{…}) }
//
// Run by hand (without the host's handshake variables) it prints a hint
// and exits with status 1.
func ServeNotifier(n Notifier) {
	serve(&server{kind: KindNotifier, notifier: n})
}

// ServeApprovalPolicy serves p as an approval-policy plugin (see
// contract.ApprovalPolicy: it may deny a request or raise the approvals it
// needs; the host bounds the answer, see DecodeDecision). Like
// ServeNotifier it returns when the host stops the plugin.
func ServeApprovalPolicy(p contract.ApprovalPolicy) {
	serve(&server{kind: KindApproval, policy: p})
}

func serve(s *server) {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: handshake(),
		Plugins:         plugin.PluginSet{string(s.kind): &grpcPlugin{srv: s}},
		// gRPC only; go-plugin negotiates AutoMTLS when the host asks for it.
		GRPCServer: plugin.DefaultGRPCServer,
	})
}

// Logger returns a logger for plugin mains. It writes JSON lines in the
// shape go-plugin's host reads from a plugin's stderr ("@level",
// "@message", "@timestamp"), so that the CA logs them with their level
// under the plugin's name.
func Logger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.TimeKey:
				a.Key = "@timestamp"
			case slog.LevelKey:
				a.Key, a.Value = "@level", slog.StringValue(strings.ToLower(a.Value.String()))
			case slog.MessageKey:
				a.Key = "@message"
			}
			return a
		},
	}))
}
