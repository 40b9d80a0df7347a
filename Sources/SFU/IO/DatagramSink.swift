/// Where a session's datagrams go: the media worker's socket.
package protocol DatagramSink: AnyObject {
    func send(_ datagram: UnsafeRawBufferPointer, to address: TransportAddress)
}
