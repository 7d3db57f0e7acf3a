/*
 * dance-eap-verify-c: the FreeRADIUS EAP-TLS ``verify { client = ... }`` hook in C.
 *
 * The same command line, the same protocol (dance/eap/protocol.py) and the same exit statuses as
 * dance-eap-verify (dance/cli/eap_hook.py), without starting a Python interpreter per check:
 *
 *     dance-eap-verify-c --socket PATH [--identity EAP-IDENTITY] CERTFILE
 *
 * It reads the one PEM certificate FreeRADIUS wrote (%{TLS-Client-Cert-Filename}), sends
 * "DANCE-EAP-VERIFY/1 TAB identity TAB base64 LF" to the verify daemon's Unix socket and exits 0
 * only on a well-formed "OK TAB name LF" reply. Everything else exits non-zero (FreeRADIUS then
 * refuses the handshake): a refusal, no daemon, a timeout, a malformed file or reply (1), unusable
 * arguments (2). It never decodes the certificate; the daemon does (strict base64, X.509).
 *
 * Build: dance eap-build-hook --output PATH (cc -O2 -o PATH hook.c). POSIX, no libraries.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define MAGIC "DANCE-EAP-VERIFY/1"
#define MAX_CERT 16384
#define MAX_B64 (4 * (MAX_CERT / 3 + 1))
#define MAX_IDENTITY 253
#define MAX_REPLY 1024
#define MAX_FILE 65536
#define TIMEOUT_S 8 /* per socket operation; the whole run is bounded by alarm() */
#define ALARM_S 9   /* FreeRADIUS kills the hook after 10 s */

static const char BEGIN[] = "-----BEGIN CERTIFICATE-----";
static const char END[] = "-----END CERTIFICATE-----";
static const char USAGE[] = "usage: dance-eap-verify-c --socket PATH [--identity EAP-IDENTITY] CERTFILE\n";

static char file[MAX_FILE + 2];
static char request[sizeof(MAGIC) + MAX_IDENTITY + MAX_B64 + 8];
static char reply[MAX_REPLY + 2];

static int refuse(const char *why) {
    fprintf(stderr, "dance-eap-verify: refused: %s\n", why);
    return 1;
}

static int is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static int is_b64(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/' || c == '=';
}

/* printable ASCII without spaces, as protocol._field_ok */
static int field_ok(const char *s, size_t n) {
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 33 || (unsigned char)s[i] > 126) return 0;
    return 1;
}

/* non-overlapping occurrences, as Python's str.count */
static size_t count(const char *hay, size_t n, const char *needle) {
    size_t k = strlen(needle), c = 0, i = 0;
    while (k && i + k <= n) {
        if (memcmp(hay + i, needle, k) == 0) {
            c++;
            i += k;
        } else {
            i++;
        }
    }
    return c;
}

static const char *find(const char *hay, size_t n, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(hay + i, needle, k) == 0) return hay + i;
    return NULL;
}

/* Appends the base64 body of the one PEM certificate in file[0:n] to out; its length or -1. */
static long pem_body(const char *text, size_t n, char *out, size_t cap) {
    for (size_t i = 0; i < n; i++)
        if (text[i] == 0 || (unsigned char)text[i] > 127) return -1; /* not ASCII */
    if (count(text, n, BEGIN) != 1 || count(text, n, END) != 1 || count(text, n, "-----") != 4)
        return -1;
    const char *b = find(text, n, BEGIN), *e = find(text, n, END);
    const char *start = b + strlen(BEGIN), *stop = e + strlen(END);
    if (e < start) return -1;
    for (const char *p = text; p < b; p++)
        if (!is_space(*p)) return -1;
    for (const char *p = stop; p < text + n; p++)
        if (!is_space(*p)) return -1;
    size_t len = 0;
    for (const char *p = start; p < e; p++) {
        if (is_space(*p)) continue;
        if (!is_b64(*p) || len >= cap || len >= MAX_B64) return -1;
        out[len++] = *p;
    }
    if (len == 0 || len % 4) return -1;
    return (long)len;
}

static int write_all(int fd, const char *buf, size_t n) {
    while (n) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *sock = NULL, *identity = NULL, *certfile = NULL;
    int files = 0;
    alarm(ALARM_S); /* default action: killed, a non-zero status for FreeRADIUS */
    signal(SIGPIPE, SIG_IGN);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if ((strcmp(a, "--socket") == 0 || strcmp(a, "--identity") == 0) && i + 1 < argc) {
            if (a[2] == 's') sock = argv[i + 1];
            else identity = argv[i + 1];
            i++;
        } else if (strncmp(a, "--socket=", 9) == 0) {
            sock = a + 9;
        } else if (strncmp(a, "--identity=", 11) == 0) {
            identity = a + 11;
        } else if (a[0] == '-') {
            fputs(USAGE, stderr);
            return 2;
        } else {
            certfile = a;
            files++;
        }
    }
    if (!sock || !*sock || files != 1) {
        fputs(USAGE, stderr);
        return 2;
    }

    /* FreeRADIUS expands a missing User-Name to "": the daemon decides what no identity means */
    if (!identity || !*identity) identity = "-";
    size_t ilen = strlen(identity);
    if (!field_ok(identity, ilen) || ilen > MAX_IDENTITY)
        return refuse("identity must be printable ASCII without spaces, at most 253 bytes");

    int fd = open(certfile, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return refuse("cannot read the certificate file");
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, file + n, sizeof(file) - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            close(fd);
            return refuse("cannot read the certificate file");
        }
        if (r == 0) break;
        n += (size_t)r;
        if (n > MAX_FILE) {
            close(fd);
            return refuse("certificate file too large");
        }
    }
    close(fd);

    int head = snprintf(request, sizeof(request), "%s\t%s\t", MAGIC, identity);
    if (head < 0 || (size_t)head >= sizeof(request)) return refuse("request too long");
    long body = pem_body(file, n, request + head, sizeof(request) - (size_t)head - 1);
    if (body < 0) return refuse("not exactly one PEM certificate (base64)");
    size_t rlen = (size_t)head + (size_t)body;
    request[rlen++] = '\n';

    struct sockaddr_un addr;
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    if (strlen(sock) >= sizeof(addr.sun_path)) return refuse("socket path too long");
    memcpy(addr.sun_path, sock, strlen(sock));
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return refuse("no socket");
    struct timeval tv = {TIMEOUT_S, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(s, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        fprintf(stderr, "dance-eap-verify: refused: no answer from the verify daemon at %s (%s)\n",
                sock, strerror(errno));
        close(s);
        return 1;
    }
    if (write_all(s, request, rlen) < 0) {
        close(s);
        return refuse("no answer from the verify daemon (send failed)");
    }
    shutdown(s, SHUT_WR);
    size_t got = 0;
    for (;;) {
        ssize_t r = read(s, reply + got, sizeof(reply) - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            close(s);
            return refuse("no answer from the verify daemon (timeout or error)");
        }
        if (r == 0) break;
        got += (size_t)r;
        if (got > MAX_REPLY) break;
    }
    close(s);

    /* protocol.decode_reply: one line, KIND TAB printable-field LF */
    if (got == 0 || got > MAX_REPLY || reply[got - 1] != '\n' || memchr(reply, '\n', got) != reply + got - 1)
        return refuse("reply is not one line");
    reply[got - 1] = 0;
    char *tab = memchr(reply, '\t', got - 1);
    if (!tab) return refuse("unknown reply");
    size_t klen = (size_t)(tab - reply);
    const char *rest = tab + 1;
    if (!field_ok(rest, (size_t)(reply + got - 1 - rest))) return refuse("unknown reply");
    *tab = 0; /* the kind is exactly OK, NO or ERR: no NUL inside (klen) */
    if (klen != strlen(reply)) return refuse("unknown reply");
    if (strcmp(reply, "OK") == 0) {
        fprintf(stderr, "dance-eap-verify: authenticated as %s\n", rest);
        return 0;
    }
    if (strcmp(reply, "NO") == 0) return refuse(rest);
    if (strcmp(reply, "ERR") == 0) {
        fprintf(stderr, "dance-eap-verify: refused, the daemon could not decide: %s\n", rest);
        return 1;
    }
    return refuse("unknown reply");
}
