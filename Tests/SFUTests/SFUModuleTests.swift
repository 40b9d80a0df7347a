import SFU
import Testing

@Test func sfuModuleHasAVersion() {
    #expect(SFUModule.version.split(separator: ".").count == 3)
}
