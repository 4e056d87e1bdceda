package agent

import (
	"context"
	"time"

	"github.com/sshward/sshward/ca/api"
)

// replicaLearner is the part of the CA client that learns the CA replicas
// the trust bundle names (ca/client LearnReplicas). Optional.
type replicaLearner interface {
	Trust(ctx context.Context) (*api.TrustResponse, error)
	LearnReplicas(urls []string) []string
}

// replicaRefresh is how often the agent reads the trust bundle for CA
// replicas registered since; after a failed read it tries again after
// playbackRetry.
const replicaRefresh = 5 * time.Minute

// learnReplicasLoop adds the CA replicas the trust bundle names to the
// agent's CA client, at start and every replicaRefresh, so an agent given
// one CA URL fails over to the others when that replica dies.
func (s *Server) learnReplicasLoop(ctx context.Context) {
	l, ok := s.cfg.CA.(replicaLearner)
	if !ok {
		return
	}
	for {
		wait := replicaRefresh
		tctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		tr, err := l.Trust(tctx)
		cancel()
		if err != nil {
			wait = playbackRetry
			s.log.DebugContext(ctx, "agent: cannot read the CA replicas from the trust bundle; retrying", "err", err)
		} else if added := l.LearnReplicas(tr.CAReplicas); len(added) > 0 {
			s.log.InfoContext(ctx, "agent: CA replicas learned from the trust bundle", "urls", added)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
