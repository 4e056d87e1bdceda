package plugins

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sshward/sshward/plugins/contract"
)

// The wire protocol, written by hand because protoc is not part of the
// build. Three gRPC services; every message is a protobuf well-known type
// (so the default proto codec on both ends needs no generated code), and
// structured payloads travel as JSON inside a BytesValue:
//
//	sshward.plugins.v1.Plugin/Info            Empty      → StringValue (the Kind served)
//	sshward.plugins.v1.Notifier/Notify        BytesValue(JSON contract.AuditEvent)      → Empty
//	sshward.plugins.v1.ApprovalPolicy/Review  BytesValue(JSON contract.AccessRequestInfo) → BytesValue(JSON contract.PolicyDecision)
//
// JSON field names are those of the Go types' json tags. Receivers ignore
// unknown fields, so either side may add fields without a new version; a
// change of meaning needs a new service name (v2) and protocolVersion.
// Errors travel as gRPC status: codes.Unknown carries the plugin's own
// error text, codes.InvalidArgument a message the plugin could not decode.
const (
	protocolVersion = 1

	serviceInfo     = "sshward.plugins.v1.Plugin"
	serviceNotifier = "sshward.plugins.v1.Notifier"
	serviceApproval = "sshward.plugins.v1.ApprovalPolicy"

	methodInfo   = "/" + serviceInfo + "/Info"
	methodNotify = "/" + serviceNotifier + "/Notify"
	methodReview = "/" + serviceApproval + "/Review"
)

// Bounds the host enforces on a decision, so that a misbehaving plugin
// cannot make a request unsatisfiable or flood the requester's terminal.
const (
	MaxExtraApprovals = 10
	MaxReasonBytes    = 1024
)

// handshake is shared by host and plugins. The cookie is not a security
// measure (go-plugin says so): it only makes a plugin binary run by hand
// print a hint instead of waiting for a host. Integrity comes from the
// SHA-256 pin, the transport from AutoMTLS.
func handshake() plugin.HandshakeConfig {
	return plugin.HandshakeConfig{
		ProtocolVersion:  protocolVersion,
		MagicCookieKey:   "SSHWARD_PLUGIN",
		MagicCookieValue: "3b1f0c2e-sshward-plugin-v1",
	}
}

// EncodeEvent is the Notify payload.
func EncodeEvent(ev contract.AuditEvent) ([]byte, error) {
	b, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("plugins: encode event %d: %w", ev.Seq, err)
	}
	return b, nil
}

// DecodeEvent parses a Notify payload. An event always has a Seq and a
// Type (the audit log assigns and requires them).
func DecodeEvent(b []byte) (contract.AuditEvent, error) {
	var ev contract.AuditEvent
	if err := json.Unmarshal(b, &ev); err != nil {
		return contract.AuditEvent{}, fmt.Errorf("plugins: decode event: %w", err)
	}
	if ev.Seq == 0 || ev.Type == "" {
		return contract.AuditEvent{}, errors.New("plugins: decode event: seq and type are required")
	}
	return ev, nil
}

// EncodeRequest is the Review payload.
func EncodeRequest(r contract.AccessRequestInfo) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("plugins: encode request %s: %w", r.ID, err)
	}
	return b, nil
}

// DecodeRequest parses a Review payload; a request always has an id.
func DecodeRequest(b []byte) (contract.AccessRequestInfo, error) {
	var r contract.AccessRequestInfo
	if err := json.Unmarshal(b, &r); err != nil {
		return contract.AccessRequestInfo{}, fmt.Errorf("plugins: decode request: %w", err)
	}
	if r.ID == "" {
		return contract.AccessRequestInfo{}, errors.New("plugins: decode request: id is required")
	}
	return r, nil
}

// EncodeDecision is the Review answer.
func EncodeDecision(d contract.PolicyDecision) ([]byte, error) {
	if err := checkDecision(d); err != nil {
		return nil, err
	}
	b, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("plugins: encode decision: %w", err)
	}
	return b, nil
}

// DecodeDecision parses and bounds a Review answer: ExtraApprovals within
// [0, MaxExtraApprovals] (a plugin may raise the approvals a request needs,
// never lower them), Reason valid UTF-8 of at most MaxReasonBytes.
func DecodeDecision(b []byte) (contract.PolicyDecision, error) {
	var d contract.PolicyDecision
	if err := json.Unmarshal(b, &d); err != nil {
		return contract.PolicyDecision{}, fmt.Errorf("plugins: decode decision: %w", err)
	}
	if err := checkDecision(d); err != nil {
		return contract.PolicyDecision{}, err
	}
	return d, nil
}

func checkDecision(d contract.PolicyDecision) error {
	switch {
	case d.ExtraApprovals < 0 || d.ExtraApprovals > MaxExtraApprovals:
		return fmt.Errorf("plugins: decision: extra_approvals %d outside [0, %d]: %w", d.ExtraApprovals, MaxExtraApprovals, ErrProtocol)
	case len(d.Reason) > MaxReasonBytes:
		return fmt.Errorf("plugins: decision: reason longer than %d bytes: %w", MaxReasonBytes, ErrProtocol)
	case !utf8.ValidString(d.Reason):
		return fmt.Errorf("plugins: decision: reason is not UTF-8: %w", ErrProtocol)
	}
	return nil
}

// Server side: service descriptors registered on go-plugin's grpc.Server.

// infoServer, notifyServer and reviewServer are the handler types of the
// three services; server implements them all.
type (
	infoServer   interface{ info() Kind }
	notifyServer interface {
		notify(context.Context, *wrapperspb.BytesValue) (*emptypb.Empty, error)
	}
	reviewServer interface {
		review(context.Context, *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error)
	}
)

var (
	infoDesc = grpc.ServiceDesc{
		ServiceName: serviceInfo,
		HandlerType: (*infoServer)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Info", Handler: unary(methodInfo,
			func(srv any, _ context.Context, _ *emptypb.Empty) (*wrapperspb.StringValue, error) {
				return wrapperspb.String(string(srv.(infoServer).info())), nil
			})}},
		Metadata: "plugins/wire.go",
	}
	notifierDesc = grpc.ServiceDesc{
		ServiceName: serviceNotifier,
		HandlerType: (*notifyServer)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Notify", Handler: unary(methodNotify,
			func(srv any, ctx context.Context, in *wrapperspb.BytesValue) (*emptypb.Empty, error) {
				return srv.(notifyServer).notify(ctx, in)
			})}},
		Metadata: "plugins/wire.go",
	}
	approvalDesc = grpc.ServiceDesc{
		ServiceName: serviceApproval,
		HandlerType: (*reviewServer)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Review", Handler: unary(methodReview,
			func(srv any, ctx context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
				return srv.(reviewServer).review(ctx, in)
			})}},
		Metadata: "plugins/wire.go",
	}
)

// unary adapts a typed handler to grpc's MethodHandler shape, including the
// optional interceptor, as generated code would.
func unary[In any, Out any](method string, h func(srv any, ctx context.Context, in *In) (Out, error)) grpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
		in := new(In)
		if err := dec(in); err != nil {
			return nil, err
		}
		if icpt == nil {
			return h(srv, ctx, in)
		}
		info := &grpc.UnaryServerInfo{Server: srv, FullMethod: method}
		return icpt(ctx, in, info, func(ctx context.Context, req any) (any, error) { return h(srv, ctx, req.(*In)) })
	}
}

// server serves one implementation over the services above.
type server struct {
	kind     Kind
	notifier Notifier
	policy   contract.ApprovalPolicy
}

func (s *server) info() Kind { return s.kind }

func (s *server) notify(ctx context.Context, in *wrapperspb.BytesValue) (_ *emptypb.Empty, err error) {
	defer recoverStatus(&err)
	ev, err := DecodeEvent(in.GetValue())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.notifier.Notify(ctx, ev); err != nil {
		return nil, implStatus(ctx, err)
	}
	return &emptypb.Empty{}, nil
}

func (s *server) review(ctx context.Context, in *wrapperspb.BytesValue) (_ *wrapperspb.BytesValue, err error) {
	defer recoverStatus(&err)
	r, err := DecodeRequest(in.GetValue())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	d, err := s.policy.Review(ctx, r)
	if err != nil {
		return nil, implStatus(ctx, err)
	}
	b, err := EncodeDecision(d)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return wrapperspb.Bytes(b), nil
}

// implStatus turns an implementation's error into a status: the caller's
// cancellation as such, anything else as codes.Unknown with its text.
func implStatus(ctx context.Context, err error) error {
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return status.FromContextError(ctx.Err()).Err()
	}
	return status.Error(codes.Unknown, err.Error())
}

// recoverStatus keeps a panicking implementation from taking the process
// (and every queued call) down with it.
func recoverStatus(err *error) {
	if r := recover(); r != nil {
		*err = status.Errorf(codes.Internal, "plugin panicked: %v", r)
	}
}

// Client side: typed calls over a connection.

type stub struct{ conn grpc.ClientConnInterface }

func (s stub) info(ctx context.Context) (Kind, error) {
	out := new(wrapperspb.StringValue)
	if err := s.conn.Invoke(ctx, methodInfo, &emptypb.Empty{}, out); err != nil {
		return "", err
	}
	return Kind(out.GetValue()), nil
}

func (s stub) notify(ctx context.Context, ev contract.AuditEvent) error {
	b, err := EncodeEvent(ev)
	if err != nil {
		return err
	}
	return s.conn.Invoke(ctx, methodNotify, wrapperspb.Bytes(b), new(emptypb.Empty))
}

func (s stub) review(ctx context.Context, r contract.AccessRequestInfo) (contract.PolicyDecision, error) {
	b, err := EncodeRequest(r)
	if err != nil {
		return contract.PolicyDecision{}, err
	}
	out := new(wrapperspb.BytesValue)
	if err := s.conn.Invoke(ctx, methodReview, wrapperspb.Bytes(b), out); err != nil {
		return contract.PolicyDecision{}, err
	}
	return DecodeDecision(out.GetValue())
}

// grpcPlugin is the go-plugin glue: on the plugin side it registers srv, on
// the host side it hands out a stub over the connection.
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	srv *server // nil on the host side
}

func (p *grpcPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	s.RegisterService(&infoDesc, p.srv)
	switch p.srv.kind {
	case KindNotifier:
		s.RegisterService(&notifierDesc, p.srv)
	case KindApproval:
		s.RegisterService(&approvalDesc, p.srv)
	}
	return nil
}

func (p *grpcPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return stub{conn: c}, nil
}
