// Package deps pins the modules the project uses while packages are being written.
package deps

import (
	_ "github.com/chromedp/chromedp"
	_ "github.com/coreos/go-oidc/v3/oidc"
	_ "github.com/creack/pty"
	_ "github.com/hashicorp/go-plugin"
	_ "github.com/pkg/sftp"
	_ "github.com/pquerna/otp/totp"
	_ "go.etcd.io/bbolt"
	_ "go.step.sm/crypto/kms/apiv1"
	_ "go.step.sm/crypto/kms/softkms"
	_ "go.step.sm/crypto/pemutil"
	_ "go.step.sm/crypto/x509util"
	_ "golang.org/x/crypto/argon2"
	_ "golang.org/x/crypto/bcrypt"
	_ "golang.org/x/crypto/ssh"
	_ "golang.org/x/crypto/ssh/agent"
	_ "golang.org/x/oauth2"
	_ "golang.org/x/sync/errgroup"
	_ "golang.org/x/sys/unix"
	_ "golang.org/x/term"
	_ "google.golang.org/grpc"
	_ "google.golang.org/protobuf/proto"
	_ "gopkg.in/yaml.v3"
)
