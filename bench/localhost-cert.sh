# Sourced by the bench scripts: `localhost_cert DIR PREFIX` makes a throwaway CA and a localhost
# certificate signed by it (P-256, 7 days) for a daemon's TLS port: DIR/PREFIXca.pem (what the
# generator trusts), DIR/PREFIXcert.pem and DIR/PREFIXkey.pem (what the daemon serves).
localhost_cert() {
    local dir=$1 p=${2:-}
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 -subj /CN=chatd-bench-ca \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
        -keyout "$dir/${p}ca-key.pem" -out "$dir/${p}ca.pem" 2>/dev/null || return 1
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
        -keyout "$dir/${p}key.pem" -out "$dir/${p}cert.csr" 2>/dev/null || return 1
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
        >"$dir/${p}ext.cnf"
    openssl x509 -req -in "$dir/${p}cert.csr" -CA "$dir/${p}ca.pem" -CAkey "$dir/${p}ca-key.pem" -CAcreateserial \
        -days 7 -extfile "$dir/${p}ext.cnf" -out "$dir/${p}cert.pem" 2>/dev/null
}
