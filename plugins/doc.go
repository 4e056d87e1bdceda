// Package plugins runs sshward's plugins: separate executables that the CA
// starts with hashicorp/go-plugin and talks to over gRPC (DESIGN.md
// "Plugins"). There are two contracts:
//
//   - Notifier: receives every audit event (contract.AuditEvent), in order, at
//     least once. The CA side that feeds it from the audit log, keeping a
//     cursor per notifier, is ca/notify.
//   - Approval policy: contract.ApprovalPolicy, reviews access requests and may
//     deny them or raise the approvals they need. Any error — a crash, a
//     timeout, a missing binary — must deny (fail closed).
//
// Host side (cmd/sshward-ca wires this into ca.Config.ApprovalPolicy and
// ca/notify):
//
//	defer plugins.CleanupClients() // once, in main: the safety net
//	c, err := plugins.Load(ctx, plugins.Config{
//		Name: "oncall", Kind: plugins.KindApproval,
//		Path: "/usr/lib/sshward/sshward-plugin-oncall", SHA256: "9f86d08…",
//		Args: []string{"--schedule", "/etc/sshward/oncall.yaml"},
//	})
//	if err != nil { … } // errors.Is(err, plugins.ErrChecksum): refuse to start
//	defer c.Close()
//	d, err := c.Review(ctx, info) // err → deny
//
// Plugin side, the whole main of a plugin:
//
//	func main() { plugins.ServeApprovalPolicy(myPolicy{…}) }
//
// Security. The binary's SHA-256 is pinned in the CA configuration and
// checked at Load and before every restart (go-plugin SecureConfig); the
// CA must keep the binary where only it can write, since the check and the
// exec are two steps. Transport is gRPC only, authenticated both ways with
// go-plugin's AutoMTLS one-time certificates. A plugin does not inherit the
// CA's environment (it may hold the CA passphrase): it gets Config.Env only.
// The handshake cookie is not a security measure.
//
// Failure. A plugin killed or crashed mid-call fails that call at once with
// ErrUnavailable (its connection breaks); the next call starts a new
// process; repeated crashes back off exponentially, and calls inside the
// backoff fail fast. A call that outlives Config.CallTimeout counts as a
// hung process, which is killed and restarted. The caller's ctx
// (deadline, cancellation) reaches the plugin's implementation through
// gRPC.
//
// Plugins link no CA code: the contract's types are in plugins/contract
// (standard library only), which the CA uses under its own names
// (TestPluginsLinkNoCACode checks the binaries' dependencies).
//
// The wire format is described in wire.go: protobuf well-known types
// carrying JSON, so no generated code is needed on either side.
package plugins
