// Package systemtest holds caravan's system tests: they build the real
// caravan binary, start servers, agents and dev mode as separate processes
// on loopback with their own data dirs, talk to them over HTTP (the Go
// client, the myNomad-style dialect with raw JSON, the CLI), kill them with
// SIGKILL and start them again, and check what survived: acknowledged
// writes after a server crash, running tasks after an agent crash, lost
// allocations replaced when a node dies, and the dev mode examples of the
// API reference.
//
// The package has no code of its own; everything is in its test files.
// Tests that need root, cgroups or Docker skip without them (and fail under
// CARAVAN_TEST_STRICT=1). Every test leaves no process, cgroup, container or
// file behind, even when it fails, and checks that it leaked no goroutine.
package systemtest
