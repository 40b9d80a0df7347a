import CLibPQ
import Foundation

/// A PostgreSQL connection through libpq (`SFU_DATABASE_URL=postgres://...`). Blocking calls: the
/// store runs them on its own thread pool, never on an event loop.
package final class PostgresDatabase: SQLDatabase {
    package let backend = "postgresql"
    private let url: String
    private var conn: OpaquePointer?

    package init(url: String) throws(SQLError) {
        self.url = url
        conn = PQconnectdb(url)
        guard PQstatus(conn) == CONNECTION_OK else {
            let message = Self.errorMessage(conn)
            PQfinish(conn)
            conn = nil
            throw .connection("cannot connect to PostgreSQL: \(message)")
        }
        try execute("SET client_min_messages TO WARNING")
    }

    deinit { PQfinish(conn) }

    static func errorMessage(_ conn: OpaquePointer?) -> String {
        guard let conn, let m = PQerrorMessage(conn) else { return "no connection" }
        return String(cString: m).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    package func reconnect() throws(SQLError) {
        if let conn {
            PQreset(conn)
        } else {
            conn = PQconnectdb(url)
        }
        guard PQstatus(conn) == CONNECTION_OK else { throw .connection("reconnect failed: \(Self.errorMessage(conn))") }
    }

    @discardableResult
    package func execute(_ sql: String, _ parameters: [SQLValue]) throws(SQLError) -> [SQLRow] {
        guard let conn, PQstatus(conn) == CONNECTION_OK else { throw .connection("not connected") }
        let texts: [String?] = parameters.map { $0.text }
        // Keep C strings alive for the call.
        var cStrings: [UnsafeMutablePointer<CChar>?] = texts.map { $0.map { strdup($0) } ?? nil }
        defer { for p in cStrings { free(p) } }
        let result: OpaquePointer? = cStrings.withUnsafeMutableBufferPointer { buffer in
            buffer.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: max(buffer.count, 1)) { values in
                PQexecParams(conn, sql, Int32(parameters.count), nil, parameters.isEmpty ? nil : values, nil, nil, 0)
            }
        }
        defer { PQclear(result) }
        let status = PQresultStatus(result)
        guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK else {
            let message = result.flatMap { PQresultErrorMessage($0) }.map { String(cString: $0).trimmingCharacters(in: .whitespacesAndNewlines) } ?? Self.errorMessage(conn)
            if PQstatus(conn) != CONNECTION_OK || result == nil { throw .connection(message) }
            throw .statement(message)
        }
        var rows: [SQLRow] = []
        let fieldCount = PQnfields(result)
        let names = (0..<fieldCount).map { String(cString: PQfname(result, $0)) }
        let types = (0..<fieldCount).map { PQftype(result, $0) }
        for r in 0..<PQntuples(result) {
            var columns: [String: SQLValue] = [:]
            for c in 0..<fieldCount {
                if PQgetisnull(result, r, c) == 1 {
                    columns[names[Int(c)]] = .null
                    continue
                }
                let text = String(cString: PQgetvalue(result, r, c))
                switch types[Int(c)] {
                case 20, 21, 23: columns[names[Int(c)]] = Int64(text).map { .int($0) } ?? .text(text)
                case 700, 701, 1700: columns[names[Int(c)]] = Double(text).map { .double($0) } ?? .text(text)
                default: columns[names[Int(c)]] = .text(text)
                }
            }
            rows.append(SQLRow(columns: columns))
        }
        return rows
    }
}
