module sshstdinrace

go 1.24.0

// The version pulumi-command 1.2.1 is built with (`go version -m` of the provider).
require golang.org/x/crypto v0.48.0

require golang.org/x/sys v0.41.0 // indirect
