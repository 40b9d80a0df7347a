import CLibPQ
import Control
import Testing

@Suite("C library link: libpq")
struct LibPQSmokeTests {
    @Test func libpqReportsItsVersionAndThreadSafety() {
        #expect(PQlibVersion() >= 100000)
        #expect(PostgresLibrary.version == Int(PQlibVersion()))
        #expect(PostgresLibrary.isThreadSafe)
    }
}
