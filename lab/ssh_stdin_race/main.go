// Runs a command over ssh as pulumi-command's remote.Command does (Dial, NewSession, Stdin,
// Run: golang.org/x/crypto/ssh at the provider's version), `runs` times, each on a new
// connection, `stdin` bytes on its stdin; prints a JSON object: error text -> count.
package main

import (
	"encoding/json"
	"flag"
	"net"
	"os"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
)

func once(address string, config *ssh.ClientConfig, command, stdin string) string {
	client, err := ssh.Dial("tcp", net.JoinHostPort(address, "22"), config)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer client.Close()
	session, err := client.NewSession()
	if err != nil {
		return "session: " + err.Error()
	}
	defer session.Close()
	session.Stdin = strings.NewReader(stdin)
	if err := session.Run(command); err != nil {
		return err.Error()
	}
	return "ok"
}

func main() {
	address := flag.String("host", "", "the host's address (root, port 22)")
	keyFile := flag.String("key", "", "the private key file")
	size := flag.Int("stdin", 50000, "bytes on stdin")
	runs := flag.Int("runs", 100, "how many runs")
	parallel := flag.Int("parallel", 4, "runs at once")
	command := flag.String("command", "echo note", "the remote command")
	flag.Parse()
	pem, err := os.ReadFile(*keyFile)
	if err != nil {
		panic(err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		panic(err)
	}
	config := &ssh.ClientConfig{
		User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), // a lab host made a moment ago
	}
	stdin := strings.Repeat("x", *size)
	counts := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	jobs := make(chan struct{})
	for range *parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				result := once(*address, config, *command, stdin)
				mu.Lock()
				counts[result]++
				mu.Unlock()
			}
		}()
	}
	for range *runs {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	json.NewEncoder(os.Stdout).Encode(counts)
}
