package registrytest

import (
	"net/http/httptest"
)

// Server is a fake registry listening on 127.0.0.1 (an httptest.Server).
// It embeds its *Handler, so every fault switch, mutator and counter is a
// method of Server too. Safe for concurrent use; call Close when done.
type Server struct {
	*Handler
	srv *httptest.Server
}

// NewServer starts a fake registry on a loopback port.
func NewServer(opts Options) (*Server, error) {
	h, err := NewHandler(opts)
	if err != nil {
		return nil, err
	}
	return &Server{Handler: h, srv: httptest.NewServer(h)}, nil
}

// URL returns the base URL, http://127.0.0.1:PORT.
func (s *Server) URL() string { return s.srv.URL }

// Close releases hanging requests, then shuts the server down and waits
// for outstanding requests.
func (s *Server) Close() {
	s.Handler.Close()
	s.srv.CloseClientConnections()
	s.srv.Close()
}
